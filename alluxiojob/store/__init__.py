"""Job stores: one ``JobStore`` over a ``KVStore`` backend (RocksDB or etcd)."""
