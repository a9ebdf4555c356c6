"""One timed workload in a fresh process, for bench_threads.py: ``python -m bench.thread_probe WORK``.

The thread settings come from the environment the parent gives this process (OMP_WAIT_POLICY,
GOMP_SPINCOUNT, OMP_NUM_THREADS, ...), because libgomp reads them once, when torch loads; so each
setting needs its own process. Prints one JSON line: wall and CPU seconds of the workload alone
(imports and data loading excluded), the torch thread count in effect, and a checksum of the
result, to see whether the thread count changes the numbers.
"""

from __future__ import annotations

import json
import sys
import time

WORKS = ("digits-train", "lgm-train", "fmnist-train", "fmnist-infer", "kmeans")


def _checksum(tensors) -> float:  # type: ignore[no-untyped-def]
    return float(sum(t.double().abs().sum() for t in tensors))


def run(work: str) -> dict[str, object]:
    """Run ``work`` once and return its timing record."""
    import torch

    from poisonlab.data.prepare import prepare_splits
    from poisonlab.models import ModelConfig, build_model
    from poisonlab.train import TrainConfig, train_model

    if work in ("digits-train", "lgm-train"):
        data = prepare_splits("digits", seed=0).train
        arch, head = ("cnn-small", "softmax") if work == "digits-train" else ("lgm-net", "lgm")
        config = TrainConfig(epochs=3, batch_size=64, val_fraction=0.0, patience=None)
    elif work in ("fmnist-train", "fmnist-infer"):
        data = prepare_splits("fashion-mnist", seed=0, limit=6000).train
        arch, head = "cnn-small", "softmax"
        config = TrainConfig(epochs=1, batch_size=128, val_fraction=0.0, patience=None)
    elif work == "kmeans":
        data, arch, head, config = None, "", "", None
    else:
        raise SystemExit(f"unknown work {work!r}; choose from {', '.join(WORKS)}")
    started, cpu = time.perf_counter(), time.process_time()
    if work == "kmeans":
        # activation clustering's per-class step: 2-means with 10 restarts on 10-d points
        from sklearn.cluster import KMeans

        points = torch.randn(2000, 10, generator=torch.Generator().manual_seed(0)).numpy()
        sums = []
        for k in range(20):
            fitted = KMeans(2, n_init=10, random_state=k).fit(points)
            sums.append(torch.as_tensor(fitted.cluster_centers_))
        checksum = _checksum(sums)
    else:
        c, h, w = data.shape
        model = build_model(ModelConfig(arch, c, h, w, data.num_classes, head=head), seed=0)
        if work == "fmnist-infer":
            from poisonlab.models.activations import capture_activations

            acts = capture_activations(model, data.images, list(model.probe_layers))
            checksum = _checksum(acts.values())
        else:
            train_model(model, data, config)
            checksum = _checksum(model.state_dict().values())
    return {
        "work": work,
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "torch_threads": torch.get_num_threads(),
        "checksum": checksum,
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])), flush=True)
