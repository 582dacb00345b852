"""Box data for the converter tests: a subset of the shared NIH box list, and small VinDr-CXR and MS-CXR
files in their published columns."""

from __future__ import annotations

from pathlib import Path

from tests.builders.repo import require_shared


def nih_subset(tmp_path: Path, n_lines: int) -> tuple[Path, list[str], Path, list[str]]:
    """The header and first ``n_lines - 1`` rows of the shared NIH box list as ``sub.csv``, an empty image
    folder, and the image names of the rows (once each, in order)."""
    src = require_shared("boxes", "nih_bbox_list_2017.csv")
    lines = src.read_text(encoding="utf-8-sig").splitlines()[:n_lines]
    sub = tmp_path / "sub.csv"
    sub.write_text("\n".join(lines) + "\n")
    images = tmp_path / "imgs"
    images.mkdir()
    return sub, lines, images, list(dict.fromkeys(ln.split(",")[0] for ln in lines[1:]))


VINDR = """image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0
9a5094b2563a1ef3ff50dc5c7ff71345,Aortic enlargement,0,R10,1264.0,743.0,1611.0,1019.0
9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R9,692.5,1370.0,1660.0,1820.0
9a5094b2563a1ef3ff50dc5c7ff71345,No finding,14,R8,,,,
051132a778e61a86eb147c7c6f564dfe,No finding,14,R2,,,,
051132a778e61a86eb147c7c6f564dfe,No finding,14,R3,,,,
051132a778e61a86eb147c7c6f564dfe,No finding,14,R5,,,,
"""
SIZES = {"9a5094b2563a1ef3ff50dc5c7ff71345": (2048, 2500), "051132a778e61a86eb147c7c6f564dfe": (2336, 2836)}


MS_CXR = """dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height
1c1fb3d0-5b8b6d0a-9e6a8a35-8ec77a1c-c8c0e8d9,Pneumonia,right lower lobe pneumonia,files/p10/p10000032/s50414267/1c1fb3d0-5b8b6d0a-9e6a8a35-8ec77a1c-c8c0e8d9.jpg,236,725,309,340,2544,3056
1c1fb3d0-5b8b6d0a-9e6a8a35-8ec77a1c-c8c0e8d9,Pneumonia,right lower lobe pneumonia,files/p10/p10000032/s50414267/1c1fb3d0-5b8b6d0a-9e6a8a35-8ec77a1c-c8c0e8d9.jpg,420,1100,120,200,2544,3056
1c1fb3d0-5b8b6d0a-9e6a8a35-8ec77a1c-c8c0e8d9,Pleural effusion,small left effusion,files/p10/p10000032/s50414267/1c1fb3d0-5b8b6d0a-9e6a8a35-8ec77a1c-c8c0e8d9.jpg,1800,2200,500,400,2544,3056
aa2f3b9e-11223344-55667788-99aabbcc-ddeeff00,Pneumothorax,apical pneumothorax,files/p11/p11000011/s51000011/aa2f3b9e-11223344-55667788-99aabbcc-ddeeff00.jpg,300,120,600,450,3050,2539
"""
