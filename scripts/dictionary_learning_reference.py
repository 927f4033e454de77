"""Trains dictionary_learning's TopK (or BatchTopK) trainer on coact's own
extract, with the default study's recipe, to check coact's training
dynamics against the reference implementation on the same activations.

    pip install torch einops pyarrow numpy
    pip install --no-deps dictionary-learning   # skips nnsight & co.
    python scripts/dictionary_learning_reference.py data/extract/<key> [topk|batchtopk] [trained|fixed]

Same as `coact run train` for the default study: non-special train tokens
in a seeded random order, scaled to unit mean squared norm (coact's and
dictionary_learning's convention), batch 2048, one epoch, 4096 latents,
k 32, warmup 10% of the steps, linear decay over the last 20%, a latent
dead after 48 Ki tokens without firing (dictionary_learning also counts
the current batch, coact does not). `fixed` keeps b_dec at the geometric
median it is set to on the first batch (coact's `b_dec: fixed`);
`trained` (the default) is dictionary_learning's own recipe. Prints the
dead fraction on the way and, at the end, the eval split's explained
variance, the fraction of latents that never fire on it (comparable with
`bench_core`'s frac_dead) and how far b_dec ended from the data's mean.
"""

import glob
import os
import sys
import time
import types

import numpy as np
import pyarrow.parquet as pq
import torch


def trainer_classes():
    """The trainers without dictionary_learning/__init__.py, which imports
    nnsight (not needed to train on stored activations)."""
    import importlib.util

    spec = importlib.util.find_spec("dictionary_learning")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("dictionary_learning is not installed: pip install --no-deps dictionary-learning")
    pkg = types.ModuleType("dictionary_learning")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["dictionary_learning"] = pkg
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer

    return {"topk": TopKTrainer, "batchtopk": BatchTopKTrainer}


def activations(files):
    rows = []
    for f in files:
        t = pq.read_table(f, columns=["is_special", "activation"])
        special = t.column("is_special").to_numpy(zero_copy_only=False)
        a = t.column("activation").combine_chunks().values.to_numpy()
        rows.append(a.reshape(len(special), -1)[~special])
    return np.concatenate(rows).astype(np.float32)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    extract, kind = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "topk")
    b_dec = sys.argv[3] if len(sys.argv) > 3 else "trained"
    classes = trainer_classes()
    if kind not in classes:
        sys.exit(f"kind must be one of {sorted(classes)}, got {kind!r}")
    if b_dec not in ("trained", "fixed"):
        sys.exit(f"b_dec must be trained or fixed, got {b_dec!r}")
    train_files = sorted(glob.glob(os.path.join(extract, "train-*.parquet")))
    eval_files = sorted(glob.glob(os.path.join(extract, "eval-*.parquet")))
    if not train_files or not eval_files:
        sys.exit(f"{extract}: no train-*.parquet / eval-*.parquet shards")
    torch.set_num_threads(os.cpu_count() or 1)
    x = activations(train_files)
    d = x.shape[1]
    scale = np.float32(1.0 / np.sqrt((x[:65536].astype(np.float64) ** 2).sum(1).mean()))
    x *= scale
    x = x[np.random.default_rng(0).permutation(len(x))]
    ev = activations(eval_files) * scale
    batch, dead_after = 2048, 49152
    steps = len(x) // batch
    # BatchTopK's inference threshold starts to move after threshold_start_step
    # (1000 by default, more than this run has): after the warmup here.
    extra = {"threshold_start_step": max(1, steps // 10)} if kind == "batchtopk" else {}
    trainer = classes[kind](
        **extra,
        steps=steps,
        activation_dim=d,
        dict_size=4096,
        k=32,
        layer=0,
        lm_name="coact-extract",
        warmup_steps=max(1, steps // 10),
        decay_start=int(0.8 * steps),
        seed=0,
        device="cpu",
    )
    trainer.dead_feature_threshold = dead_after
    if b_dec == "fixed":
        # Step 0 still sets it to the geometric median; without a gradient
        # Adam then leaves it there.
        trainer.ae.b_dec.requires_grad_(False)
    xs, t0 = torch.from_numpy(x), time.time()
    for step in range(steps):
        trainer.update(step, xs[step * batch : (step + 1) * batch])
        if step % 32 == 0 or step == steps - 1:
            dead = (trainer.num_tokens_since_fired >= dead_after).float().mean().item()
            print(f"step {step:4d}  dead {dead:.3f}  {time.time() - t0:.0f} s", flush=True)
    ae, e = trainer.ae, torch.from_numpy(ev)
    with torch.no_grad():
        z = ae.encode(e, use_threshold=True) if kind == "batchtopk" else ae.encode(e)
        fvu = ((e - ae.decode(z)) ** 2).sum() / ((e - e.mean(0)) ** 2).sum()
        never = ((z > 0).sum(0) == 0).float().mean().item()
        l0 = (z > 0).sum(1).float().mean().item()
        offset = (xs.mean(0) - ae.b_dec).norm().item()
    print(f"{kind}, b_dec {b_dec}: eval explained variance {1 - fvu.item():.4f}, L0 {l0:.1f}, "
          f"never firing on eval {never:.3f}, |mean(x) - b_dec| {offset:.3f} (scaled units)")


if __name__ == "__main__":
    main()
