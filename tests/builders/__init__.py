"""What the tests (and the benchmarks in bench/) build: fake dataset layouts, tiny models and adapters,
prediction files and eval folders, the bad-input table, and where the repository and its reference data are.

Only these modules are shared: a test module (``test_*.py``) imports from here, never from another test
module, and bench/ imports from here, never a test module (tests/repo/test_layout.py checks both).
"""
