"""Causal check: do the heads whose spectrum changes most drive the hallucinated transcripts?

Calm-Whisper (arXiv 2505.12969) found 3 of 20 heads of large-v3 behind most non-speech
hallucinations. Here the question is asked of the spectral picture:

1. **Head statistic.** Every decoder cross-attention head's output (before the output
   projection, `wspec.interventions.head_outputs`) over the natural decode's decision rows
   gives an effective rank N_eff (K = 10), divided by its Gaussian null of the same shape
   (`wspec.seqlen`), so a short decode is not "compressed" merely for being short.
2. **Spectral change** of a head = mean normalised N_eff on the hallucinated clips minus the
   mean on clean clips, in % of the clean mean. The **targeted** heads are the k with the
   largest absolute change; the **random** sets are `n_random` seeded draws of k heads from
   the other heads.
3. **Transcript change** of an ablation = normalised token edit distance between the ablated
   and the unablated greedy decode of the same clip (0 = identical, 1 = nothing shared),
   both decoded under the same token cap.
4. **Per clip**: targeted change − mean random change; averaged over clips, with a cluster
   bootstrap (`wspec.contrasts.cluster_mean`; cluster = source sentence / generator kind,
   identical model inputs counted once). Hallucinated clips are the question, survived
   stressed clips the control: a head set that alters every transcript is not specific to
   hallucination.

The heads are chosen on the same hallucinated clips that are then ablated; that is the
question asked (are *these* heads causal for *these* transcripts), not a held-out test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rapidfuzz.distance import Levenshtein

from wspec import cache as wcache
from wspec.audio import read_audio
from wspec.contrasts import cluster_mean
from wspec.crossmodel import stressed_group
from wspec.errors import WspecError
from wspec.interventions import (
    ablation,
    all_heads,
    head_means,
    head_outputs,
    run_with_hooks,
)
from wspec.models.loaded import LoadedWhisper
from wspec.seqlen import gaussian_null
from wspec.spectra import effective_rank, gram_eigenvalues

GROUPS: tuple[str, ...] = ("hallucinated", "survived")


@dataclass(frozen=True)
class AblationSettings:
    """The check's choices, all in one place (they key the cache)."""

    k: int = 3  # heads ablated per set (Calm-Whisper: 3 heads)
    n_random: int = 3  # random head sets per clip
    per_group: int = 6  # clips per group (hallucinated, survived) and clean reference clips
    max_new_tokens: int = 32  # token cap of every decode here (a loop would cost 224 steps)
    mode: str = "zero"  # "zero" or "mean" ablation (wspec.interventions.ABLATIONS)
    K: int = 10  # N_eff over the top-K eigenvalues, as Table 1
    seed: int = 0


def ablation_settings(reduced: bool) -> AblationSettings:
    """The book's settings: a handful of clips per group in a reduced build, more in a full one."""
    return AblationSettings(per_group=6 if reduced else 16)


def head_neff(outputs: torch.Tensor, K: int = 10) -> np.ndarray:
    """(layers, heads) N_eff of each head's rows, divided by the Gaussian null of its shape."""
    n_layers, n_heads, n_rows, width = outputs.shape
    if n_rows < 2:
        return np.full((n_layers, n_heads), np.nan)
    lam = gram_eigenvalues(outputs.double()).numpy()
    null = gaussian_null(n_rows, width, (K,))[("n_eff", K)]
    return np.asarray(effective_rank(lam, K), dtype=float) / null


def spectral_change(hallucinated: list[np.ndarray], clean: list[np.ndarray]) -> np.ndarray:
    """(layers, heads) change of mean normalised N_eff, hallucinated vs clean, in %."""
    hall, ref = np.nanmean(np.stack(hallucinated), 0), np.nanmean(np.stack(clean), 0)
    return 100.0 * (hall - ref) / ref


def targeted_heads(change: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k heads with the largest absolute change (ties: lower layer, then head, first)."""
    score = np.nan_to_num(np.abs(change), nan=-1.0).ravel()
    order = np.argsort(-score, kind="stable")[:k]
    return [(int(i) // change.shape[1], int(i) % change.shape[1]) for i in order]


def random_head_sets(
    heads: list[tuple[int, int]], exclude: list[tuple[int, int]], k: int, n: int, seed: int
) -> list[list[tuple[int, int]]]:
    """`n` seeded draws of k heads (without replacement) from `heads` not in `exclude`."""
    pool = [h for h in heads if h not in set(exclude)]
    if len(pool) < k:
        raise WspecError(f"only {len(pool)} heads left to draw {k} random ones from")
    rng = np.random.default_rng(seed)
    return [[pool[i] for i in sorted(rng.choice(len(pool), k, replace=False))] for _ in range(n)]


def edit_change(reference: list[int], tokens: list[int]) -> float:
    """Token edit distance / longer length: 0 unchanged, 1 nothing in common (two empties: 0)."""
    return float(Levenshtein.normalized_distance(reference, tokens))


def ablation_clips(
    labels: pd.DataFrame,
    decodes: pd.DataFrame,
    stimuli: pd.DataFrame,
    model: str,
    per_group: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Seeded clips of `model`: up to `per_group` hallucinated, survived and clean ones.

    Stressed families follow `wspec.crossmodel.stressed_group`; identical model inputs
    (equal ``input_key``) count once; only clips of the stimulus set (with a ``path``) are
    eligible, so the per-model attack clips are not. Columns: stimulus_id, group, cluster, path.
    """
    lab = labels[labels["model"] == model][["stimulus_id", "family", "hallucinated"]]
    dec = decodes[decodes["model"] == model][["stimulus_id", "cluster", "input_key"]]
    frame = lab.merge(dec, on="stimulus_id").drop_duplicates("input_key")
    kind = frame["family"].map(stressed_group)
    frame["group"] = np.where(
        kind == "clean",
        "clean",
        np.where(kind == "stressed", np.where(frame["hallucinated"], *GROUPS), ""),
    )
    paths = stimuli[["id", "path"]].rename(columns={"id": "stimulus_id"})
    frame = frame[frame["group"] != ""].merge(paths, on="stimulus_id")  # clips of the set
    picked = [
        g.sample(n=min(per_group, len(g)), random_state=seed)
        for _, g in frame.groupby("group", sort=True)
    ]
    out = pd.concat(picked)[["stimulus_id", "group", "cluster", "path"]]
    return out.sort_values(["group", "stimulus_id"], ignore_index=True)


def _cache_file(loaded: LoadedWhisper, clips: pd.DataFrame, settings: AblationSettings) -> Path:
    """The entry of these clips' ablations (`wspec.cache.ABLATIONS`): model, settings and
    every clip's audio bytes."""
    audio = hashlib.sha256()
    for path in clips.sort_values("stimulus_id")["path"]:
        audio.update(hashlib.sha256(Path(path).read_bytes()).digest())
    key = wcache.ABLATIONS.key(
        model=loaded.identity, settings=asdict(settings), audio=audio.hexdigest()
    )
    return wcache.ABLATIONS.dir() / f"{key}.parquet"


def run_ablation(
    loaded: LoadedWhisper, clips: pd.DataFrame, settings: AblationSettings = AblationSettings()
) -> pd.DataFrame:
    """One row per (clip, head set): the transcript change its ablation caused; cached.

    Columns: stimulus_id, group, cluster, head_set ("targeted" or "random<i>"), heads
    (JSON list of [layer, head]), change.
    """

    def compute() -> pd.DataFrame:
        if not {"clean", "hallucinated"} <= set(clips["group"]):
            raise WspecError("the ablation check needs clean and hallucinated clips to pick heads")
        cap = settings.max_new_tokens
        plain, neff, clean_outputs = {}, {}, []
        for clip in clips.itertuples():
            decoded, outputs = head_outputs(
                loaded, read_audio(clip.path, allow_long=True), max_new_tokens=cap
            )
            plain[clip.stimulus_id], neff[clip.stimulus_id] = (
                decoded.tokens,
                head_neff(outputs, settings.K),
            )
            if clip.group == "clean":
                clean_outputs.append(outputs)
        # Mean ablation writes each head's mean output over the clean reference decodes.
        means = head_means(clean_outputs) if settings.mode == "mean" else None
        by_group = {
            g: [neff[s] for s in clips.loc[clips["group"] == g, "stimulus_id"]]
            for g in ("hallucinated", "clean")
        }
        targeted = targeted_heads(
            spectral_change(by_group["hallucinated"], by_group["clean"]), settings.k
        )
        heads = all_heads(loaded)
        sets = {"targeted": targeted} | {
            f"random{i}": s
            for i, s in enumerate(
                random_head_sets(heads, targeted, settings.k, settings.n_random, settings.seed)
            )
        }
        rows = []
        for clip in clips[clips["group"].isin(GROUPS)].itertuples():
            audio = read_audio(clip.path, allow_long=True)
            for name, chosen in sets.items():
                decoded = run_with_hooks(
                    loaded, audio, ablation(chosen, settings.mode, means), max_new_tokens=cap
                )
                rows.append(
                    {
                        "stimulus_id": clip.stimulus_id,
                        "group": clip.group,
                        "cluster": clip.cluster,
                        "head_set": name,
                        "heads": json.dumps([list(h) for h in chosen]),
                        "change": edit_change(plain[clip.stimulus_id], decoded.tokens),
                    }
                )
        return pd.DataFrame(rows)

    return wcache.fetch_frame(_cache_file(loaded, clips, settings), compute)


def ablation_summary(
    changes: pd.DataFrame, *, n_boot: int, seed: int = 0, ci: float = 0.95
) -> pd.DataFrame:
    """Per group: mean targeted and random change, and targeted − random with its interval."""
    rows = []
    for group in GROUPS:
        cell = changes[changes["group"] == group]
        if cell.empty:
            continue
        random = cell[cell["head_set"] != "targeted"].groupby("stimulus_id")["change"].mean()
        per_clip = cell[cell["head_set"] == "targeted"].set_index("stimulus_id")
        per_clip = per_clip.assign(random=random, diff=per_clip["change"] - random)
        mean = cluster_mean(per_clip["diff"], per_clip["cluster"], n_boot=n_boot, ci=ci, seed=seed)
        rows.append(
            {
                "group": group,
                "targeted": float(per_clip["change"].mean()),
                "random": float(per_clip["random"].mean()),
                "diff": mean.estimate,
                "ci_low": mean.ci_low,
                "ci_high": mean.ci_high,
                "n_clips": mean.n,
                "n_clusters": mean.n_clusters,
            }
        )
    return pd.DataFrame(rows)
