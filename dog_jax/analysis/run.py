"""One analysis run as a library call: checkpoints in, summary.json / clusters.csv / figures out.

``python -m dog_jax.analysis`` is this function behind argparse; the sweep's kernel report calls it
directly. Checkpoints and the output directory may be local or ``gs://`` URLs (:mod:`dog_jax.storage`).
"""

from __future__ import annotations

import os
from typing import Sequence

from dog_jax.analysis.readers import Progress
from dog_jax.analysis.report import (AnalysisOptions, CheckpointAnalysis, analyse_checkpoint, unique_names,
                                     write_clusters_csv, write_summary)
from dog_jax.storage import run_path


def analyse_to_dir(checkpoints: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                   options: AnalysisOptions | None = None, *, figures: bool = True,
                   progress: Progress | None = None,
                   paths_relative_to: str | os.PathLike = ".") -> list[CheckpointAnalysis]:
    """Analyses each checkpoint (in order) and writes the outputs into ``out_dir`` (created if missing).

    Args:
      checkpoints: files or orbax directories (see :func:`dog_jax.checkpoints.read_checkpoint`).
      out_dir: where summary.json, clusters.csv and (with ``figures``) the PNG figures go.
      options: the analysis settings (defaults: the paper's k = 3, 10 k-means restarts, seed 0).
      figures: also write the PNG figures (matplotlib).
      progress: called with one-line progress messages.
      paths_relative_to: summary.json records each checkpoint's path relative to this directory
        (default: the current one) when the checkpoint lies inside it, else as given.

    Returns:
      One :class:`CheckpointAnalysis` per checkpoint, in the order given; ``report.summary`` of them
      is the content of summary.json.

    Raises:
      CheckpointError: a checkpoint cannot be read. ValueError: bad options or no kernels.
    """
    options = options or AnalysisOptions()
    say = progress or (lambda _: None)
    missing = [os.fspath(p) for p in checkpoints if not run_path(p).exists()]
    if missing:  # fail before minutes of work on the checkpoints before it
        from dog_jax.checkpoints import CheckpointError

        raise CheckpointError(f"{missing[0]}: no such file or directory.")
    names = unique_names([os.fspath(p) for p in checkpoints])
    analyses = [analyse_checkpoint(path, name, options, say) for path, name in zip(checkpoints, names)]
    out_dir = run_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_summary(analyses, options, out_dir, paths_relative_to)
    write_clusters_csv(analyses, out_dir)
    if figures:
        say("writing figures")
        from dog_jax.analysis.plots import write_figures

        write_figures(analyses, out_dir, seed=options.seed)
    return analyses
