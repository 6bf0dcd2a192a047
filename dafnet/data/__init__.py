"""Data sources and writers: the built-in phantom and the nnU-Net raw layout."""
