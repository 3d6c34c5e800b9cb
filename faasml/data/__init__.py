"""Datasets for the ML layer: loading, featurizing, sharding into the object store, prefetching.

Typical flow::

    from faasml.data import load_libsvm, upload_dataset, StoredDataset

    X, y = load_libsvm("train.svm", n_features=2**18)
    ds = upload_dataset(cloud.storage, X, y, name="ctr", batch_size=1024, test_fraction=0.2)
    # ... inside a worker:
    ds = StoredDataset.open(store, "ctr")
    with ds.iter_batches(ds.train_ids, prefetch=2) as batches:
        for X_batch, y_batch in batches:
            ...
"""

from __future__ import annotations

from faasml.data.features import FeatureHasher, MinMaxScaler, StandardScaler
from faasml.data.formats import (
    check_xy,
    dump_libsvm,
    load,
    load_csv,
    load_libsvm,
    load_npz,
    load_ratings,
    save_npz,
)
from faasml.data.sharding import (
    BatchIterator,
    StoredDataset,
    decode_batch,
    encode_batch,
    upload_dataset,
)

__all__ = [
    "BatchIterator",
    "FeatureHasher",
    "MinMaxScaler",
    "StandardScaler",
    "StoredDataset",
    "check_xy",
    "decode_batch",
    "dump_libsvm",
    "encode_batch",
    "load",
    "load_csv",
    "load_libsvm",
    "load_npz",
    "load_ratings",
    "save_npz",
    "upload_dataset",
]
