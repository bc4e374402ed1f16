"""Scale benchmark: hybridrec and peers on generated Electronics-like data, sizes XS to L.

`python -m benchmarks.scale --size S`; see run.py.
"""
