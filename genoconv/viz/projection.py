"""Principal components of embedding rows: fitted in one streaming pass, applied to any rows, saved to share axes.

The fit accumulates the row count, sum and scatter matrix in float64 over blocks of rows (a chromosome's windows
never have to be in memory at once), then takes the SVD of the covariance matrix (symmetric, so its singular
vectors are its eigenvectors and its singular values the variances along them). The rows are shifted by the first
block's mean before accumulating, which keeps the one-pass covariance free of cancellation. Signs are fixed so
that the largest-magnitude loading of every component is positive: the same data always gives the same axes.

A projection file (``.npz``, no pickles) holds ``mean`` (d,), ``components`` (k, d), ``variance`` (k,),
``total_variance`` and ``meta`` (JSON: model checkpoint sha256, absolute layer, d_model, the rows it was fitted on,
their file and count); a file whose model, layer or width differs is refused, since its axes would mean nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genoconv.errors import InputError, InputFileError, cannot_write

PROJECTION_FORMAT = "genoconv-projection"


@dataclass(frozen=True)
class Projection:
    """``apply(rows)`` = ``(rows - mean) @ components.T``: coordinates on the top ``k`` principal components."""

    mean: np.ndarray
    components: np.ndarray
    variance: np.ndarray
    total_variance: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def explained_ratio(self) -> np.ndarray:
        """Fraction of the total variance along each component."""
        return self.variance / self.total_variance if self.total_variance > 0 else np.zeros_like(self.variance)

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """(n, d) rows -> (n, k) float64 coordinates."""
        return (np.asarray(rows, np.float64) - self.mean) @ self.components.T

    def save(self, path: str | os.PathLike[str]) -> None:
        meta = json.dumps({"format": PROJECTION_FORMAT, **self.meta}, sort_keys=True)
        try:
            with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
                np.savez(fh, mean=self.mean, components=self.components, variance=self.variance,
                         total_variance=np.float64(self.total_variance), meta=np.str_(meta))
        except OSError as err:
            raise cannot_write(path, err) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Projection":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.pop("format", None) != PROJECTION_FORMAT:
                    raise ValueError("no format tag")
                proj = cls(mean=z["mean"].astype(np.float64), components=z["components"].astype(np.float64),
                           variance=z["variance"].astype(np.float64), total_variance=float(z["total_variance"]),
                           meta=meta)
        except FileNotFoundError:
            raise InputFileError(f"{path}: no such projection file") from None
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path} is not a genoconv projection file (--save-projection writes one): "
                             f"{err}") from None
        if proj.components.ndim != 2 or proj.mean.shape != (proj.components.shape[1],):
            raise InputError(f"{path}: inconsistent projection (mean {proj.mean.shape}, components "
                             f"{proj.components.shape})")
        return proj

    def check_fits(self, source: str, model_sha256: str, layer: int, d_model: int, where: str) -> None:
        """Refuse rows from another model, layer or width than the fit's (``where`` names the projection)."""
        theirs = (self.meta.get("model_sha256"), self.meta.get("layer"), self.meta.get("d_model"))
        for what, mine, other in zip(("model checkpoint", "layer", "d_model"), (model_sha256, layer, d_model), theirs):
            if other is not None and other != mine:
                raise InputError(f"{where} was fitted on {what} {other} but {source} has {what} {mine}: "
                                 "axes only carry over between files of the same model and layer")
        if self.components.shape[1] != d_model:
            raise InputError(f"{where} has width {self.components.shape[1]} but {source} has d_model {d_model}")


def fit_projection(blocks: Iterable[np.ndarray], n_components: int, meta: Mapping[str, Any] | None = None,
                   *, what: str = "rows") -> Projection:
    """PCA of all rows of ``blocks`` (each (n_i, d)); ``what`` names them in errors."""
    count, shift, total, scatter = 0, None, None, None
    for block in blocks:
        x = np.asarray(block, np.float64)
        if not len(x):
            continue
        if shift is None:
            shift = x.mean(0)
            total, scatter = np.zeros_like(shift), np.zeros((len(shift), len(shift)))
        x = x - shift
        count += len(x)
        total += x.sum(0)
        scatter += x.T @ x
    if count < 2 or shift is None:
        raise InputError(f"{what}: {count} row(s); a projection needs at least 2")
    d = len(shift)
    if not 1 <= n_components <= d:
        raise InputError(f"{what}: asked for {n_components} components of {d}-dimensional rows")
    if n_components > count - 1:  # centred rows span at most count - 1 directions; the rest would be arbitrary
        logging.getLogger("genoconv").warning("%s: %d rows have only %d principal components; keeping those, not %d",
                                              what, count, count - 1, n_components)
        n_components = count - 1
    mean_shifted = total / count
    cov = (scatter - count * np.outer(mean_shifted, mean_shifted)) / (count - 1)
    vectors, values, _ = np.linalg.svd(cov, hermitian=True)
    components = vectors[:, :n_components].T.copy()
    signs = np.sign(components[np.arange(n_components), np.abs(components).argmax(1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    info = {**(meta or {}), "n_rows": count}
    return Projection(mean=shift + mean_shifted, components=components, variance=values[:n_components].copy(),
                      total_variance=float(np.trace(cov)), meta=info)

