"""An S3-compatible API on every worker: read the warmed cache with any S3 client.

``server.S3Service`` assembles it: ``app`` (admission, auth, routing), ``sigv4``
(signatures), ``buckets`` and ``bucket_ops`` (buckets and listings, ``listing``),
``objects`` (GetObject/HeadObject on the owner), ``ownership`` (the hash ring seen from
a worker) and ``forward`` (proxy or redirect to the owner).
"""
