"""DREAM+ on distribution matching (DM) on the embedded digits data: configs/dm_tiny.py with DREAM+'s representative
matching as DM's real batch.

python -m launch.main --config=configs/dream_dm_tiny.py
Every 10 steps (interval, as DREAM+'s clustering every 10 rounds), per class, k-means on the current random
network's embeddings of the class's real images into batch_real = 32 clusters (digits have ~144 images per class),
and the real image nearest each centre is the class's real batch until the next clustering (the DREAM+ paper also
reports representative matching for feature matching). Compare at the same budget with
python -m launch.main --config=configs/dm_tiny.py --config.dm.batch_real=32
"""
import importlib.util
import os


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dm_tiny.py")
    spec = importlib.util.spec_from_file_location("dm_tiny", path)
    dm_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dm_tiny)
    config = dm_tiny.get_config()
    config.dm.batch_real = 32
    r = config.dm.real_batch
    r.kind = "representatives"
    r.interval = 10
    r.subsample = 1
    r.kmeans_iters = 100
    return config
