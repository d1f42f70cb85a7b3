"""Reading volumes and writing labels: whole TIFF files (``tiff``) and lazy TIFF/zarr/OME-Zarr
access for volumes larger than memory (``lazy``)."""
