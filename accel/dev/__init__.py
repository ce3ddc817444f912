"""Measuring tools, never imported by the library: importing accel loads none of them.

- ``accel.dev.opcount``: a backend whose arrays count the operations (GPU kernel launches) a
  training step issues; also importable as ``accel.opcount``.
- ``accel.dev.cuda_compile``: every CUDA kernel compiled to PTX and assembled for sm_80 and
  sm_90 without a GPU, with the argument types ``accel.dispatch.OPS`` declares.
"""
