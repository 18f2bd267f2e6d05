"""Layer maps between a student of L_S layers and a teacher of L_T (Distiller's `intermediate_strategy` /
`layer_mapping_strategy`; TinyBERT's uniform map). Layers count from 1 (index 0 of Hugging Face's
`hidden_states` is the embeddings, never mapped: the students keep the teacher's embeddings or project them).

- `skip`: uniform, student layer l -> teacher layer max(1, floor(l * L_T / L_S + 1/2)) (every k-th teacher layer
  when L_T = k L_S; the last layer always maps to the last; a deeper student maps several layers to one);
- `last`: l -> L_T - L_S + l, the teacher's top L_S layers (needs L_S <= L_T);
- `first`: l -> l, the teacher's bottom L_S layers (needs L_S <= L_T)."""

from __future__ import annotations

import math

from mosnas.config.sections import KD_LAYER_MAPS
from mosnas.errors import ConfigError

LAYER_MAPS = KD_LAYER_MAPS  # the choices of glue.kd_layer_map


def layer_map(strategy: str, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """[(student layer, teacher layer)] for every student layer 1..L_S, both counted from 1.

    Raises ConfigError for an unknown strategy, a depth < 1, or `last` / `first` with L_S > L_T."""
    if strategy not in LAYER_MAPS:
        raise ConfigError(f"glue.kd_layer_map: unknown value {strategy!r}; expected one of {', '.join(LAYER_MAPS)}")
    if student_layers < 1 or teacher_layers < 1:
        raise ConfigError(
            f"a layer map needs layers on both sides (student {student_layers}, teacher {teacher_layers})"
        )
    if strategy != "skip" and student_layers > teacher_layers:
        raise ConfigError(
            f"glue.kd_layer_map={strategy} maps each of the student's {student_layers} layers to its own teacher "
            f"layer, but the teacher has {teacher_layers}; use kd_layer_map=skip"
        )
    if strategy == "skip":
        return [
            (s, max(1, math.floor(s * teacher_layers / student_layers + 0.5))) for s in range(1, student_layers + 1)
        ]
    offset = teacher_layers - student_layers if strategy == "last" else 0
    return [(s, s + offset) for s in range(1, student_layers + 1)]
