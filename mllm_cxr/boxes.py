"""Boxes for grounded tasks: the one box codec per model family and the box geometry.

The implementation lives in :mod:`cxr_io.boxes` (standard library only), because ``reward`` decodes
completions with it and ``data_prep`` validates records with it, and neither may import ``mllm_cxr``.
This module is the name the rest of ``mllm_cxr`` (tasks, prompts, training, inference) uses.
"""

from cxr_io.boxes import (
    COORDS,
    FAMILIES,
    MAIRA2_BINS,
    NO_BOXES_TEXT,
    REL_SCALE,
    DecodedBoxes,
    DecodedFindings,
    box_area,
    box_problem,
    decode_boxes,
    decode_grounded,
    encode_boxes,
    encode_grounded,
    iou,
    pixel_frame,
    quantum,
    smart_resize,
)

__all__ = ["COORDS", "FAMILIES", "MAIRA2_BINS", "NO_BOXES_TEXT", "REL_SCALE", "DecodedBoxes", "DecodedFindings",
           "box_area", "box_problem", "decode_boxes", "decode_grounded", "encode_boxes", "encode_grounded", "iou",
           "pixel_frame", "quantum", "smart_resize"]
