"""Using trained models on whole images: fusion of files and arrays."""

from csakd.inference.fuse import fuse_arrays, fuse_files

__all__ = ["fuse_arrays", "fuse_files"]
