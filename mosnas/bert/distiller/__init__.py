"""Distiller (He et al., SustaiNLP @ EMNLP 2021, "Distiller: A Systematic Study of Model Distillation Methods in
Natural Language Processing") inside mosnas: a knowledge-distillation pipeline for task-specific distillation in
`mosnas glue` as configuration — which representations a student learns from its fine-tuned teacher (logits,
every mapped layer's hidden states, attention distributions, the last layer's self-attention relations), which
layer map pairs their layers (`layers`), which loss per representation (`losses`; MI-α, a learned
mutual-information bound: `mi`) — built for one student and teacher by `pipeline`."""
