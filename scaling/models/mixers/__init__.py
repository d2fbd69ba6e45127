"""Token mixers: attention and the recurrent memories that Memory Caching wraps."""
