"""What more than one process needs at run time: the Temporal connection and its payload codec.

Above `oauth` (the codec derives its keys from the master keyring), below the packages that
run workflows or hand events to them (`worker`, `ingest`, `triggers`, `actions`).
"""
