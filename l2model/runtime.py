"""Loads a model directory and scores batches of prompts with onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from l2model.contract import MODEL_FILE, OUTPUTS, Manifest


@dataclass(frozen=True, slots=True)
class ModelScore:
    score: float
    family: str
    severity: float
    context: str


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


class L2Model:
    """One loaded model. ``score_batch`` is CPU-bound: call it from an executor thread."""

    def __init__(self, model_dir: Path, manifest: Manifest, session: ort.InferenceSession) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self._session = session

    @classmethod
    def load(cls, model_dir: Path, threads: int = 2) -> L2Model:
        manifest = Manifest.read(model_dir)
        if manifest.input.kind != "text":
            raise ValueError(
                f"model {manifest.name} {manifest.version} takes input kind "
                f"{manifest.input.kind!r}; this runtime scores raw-text ('text') models"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        missing = set(OUTPUTS) - {output.name for output in session.get_outputs()}
        if missing:
            raise ValueError(f"{model_dir / MODEL_FILE} lacks outputs {sorted(missing)}")
        return cls(model_dir, manifest, session)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    def score_batch(self, texts: Sequence[str]) -> list[ModelScore]:
        if not texts:
            return []
        feed = np.array(texts, dtype=object).reshape(-1, 1)
        binary, family, severity, context = self._session.run(
            list(OUTPUTS), {self.manifest.input.name: feed}
        )
        threat = _softmax(binary)[:, 1]
        families = self.manifest.labels.family
        contexts = self.manifest.labels.context
        family_idx = family.argmax(axis=1)
        context_idx = context.argmax(axis=1)
        sev = np.clip(severity[:, 0], 0.0, 1.0)
        return [
            ModelScore(
                score=float(threat[i]),
                family=families[family_idx[i]],
                severity=float(sev[i]),
                context=contexts[context_idx[i]],
            )
            for i in range(len(texts))
        ]
