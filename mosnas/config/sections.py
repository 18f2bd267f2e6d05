"""The engine's sections of a run config, one frozen dataclass per stage (data, supernet, train, decode,
latency, search, finetune, eval, glue): each key with its default, declared bounds or choices and a one-line
meaning (the generated reference, `mosnas config`, reads these comments)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mosnas.config.settings import SEED, num, one_of
from mosnas.errors import ConfigError

GENERATORS = ("shared", "layer", "neuron", "kshot")
ROUTER_INPUTS = ("arch", "constant")
EXPERT_INITS = ("copy", "independent", "pretrained-first")
SAMPLINGS = ("sandwich", "alternate", "uniform", "fixed")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("inverse_sqrt", "cosine")
FAMILIES = ("mt", "bert", "nasbert")  # model families (mosnas.family.FAMILIES holds their packages)
# sacreBLEU's tokenizers (sacrebleu.metrics.BLEU.TOKENIZERS; a test keeps the two equal); "": by target language
BLEU_TOKENIZERS = ("", "none", "zh", "13a", "intl", "char", "ja-mecab", "ko-mecab", "spm", "flores101", "flores200")
BLEU_TOKENIZERS += ("spBLEU-1K",)
# Distiller's KD pipeline at GLUE fine-tuning (mosnas.bert.distiller): prediction-layer losses, intermediate
# representations, layer maps and the per-representation losses
KD_LOSSES = ("ce", "mse")
KD_REPRESENTATIONS = ("hidden", "attention", "relations")
KD_LAYER_MAPS = ("skip", "last", "first")
KD_HIDDEN_LOSSES = ("mse", "cos", "pkd", "mi")
KD_ATTENTION_LOSSES = ("mse", "kl")


@dataclass(frozen=True)
class DataConfig:
    dir: str = "../shared/data/multi30k"  # folder with {split}.{lang}[.gz] files, one sentence a line
    src_lang: str = "en"  # source language: files {split}.{src_lang}
    tgt_lang: str = "de"  # target language: files {split}.{tgt_lang}
    train: str = "train"  # training split name
    valid: str = "val"  # validation split (checkpoint NLL, search fitness)
    test: str = "test_2016_flickr"  # split that mosnas run scores
    vocab_size: int = num(6000, gt=0)  # joint sentencepiece vocabulary of both sides
    max_tokens: int = num(4096, gt=0)  # padded tokens (source + target side, the larger) per batch
    max_len: int = num(128, gt=0)  # training pairs longer than this (in subwords) are dropped
    train_limit: int = num(0, ge=0)  # a seeded random sample of N training pairs (0: all; BERT: lines)
    valid_limit: int = num(0, ge=0)  # a seeded random sample of N validation pairs (0: all; BERT: sequences)
    tokenizer: str = ""  # an existing sentencepiece model to use instead of training one (fine-tuning)


@dataclass(frozen=True)
class SupernetConfig:
    space: str = "configs/spaces/multi30k.yaml"  # search space YAML (see configs/spaces)
    # shared (HAT) | layer / neuron (layer-/neuron-wise MoS) | kshot (K-shot NAS: K whole supernets, one simplex)
    generator: str = one_of("neuron", GENERATORS)
    num_experts: int = num(2, gt=0)  # m: expert matrices per MoS layer (kshot: K supernet copies); 1: plain sharing
    router_hidden: int = num(128, gt=0)  # hidden units of each router MLP (arch embedding -> mixing)
    router_input: str = one_of("arch", ROUTER_INPUTS)  # arch | constant: routers see ones, not the arch (a control)
    expert_init: str = one_of("independent", EXPERT_INITS)  # copy | independent | pretrained-first
    pretrained: str = ""  # safetensors of a dense model (export) for copy / pretrained-first
    # the order in which shallower archs drop layers, most important first (the BERT family fills it from its
    # importance order); (): the first layers (plain slicing)
    layer_order: tuple[int, ...] = num((), ge=0)
    mos_attention: bool = False  # also mix the attention projections (default: FFN only, as the paper; kshot: all)
    prenorm: bool = True  # LayerNorm before each block (True) or after
    dropout: float = num(0.1, ge=0, lt=1)  # dropout after attention and FFN blocks
    attention_dropout: float = num(0.0, ge=0, lt=1)  # dropout on attention probabilities
    activation_dropout: float = num(0.0, ge=0, lt=1)  # dropout inside the FFN, after the activation
    share_embeddings: bool = True  # one vocabulary table for encoder, decoder and output


@dataclass(frozen=True)
class TrainConfig:
    seed: int = num(1, **SEED)  # seeds data order, archs and init
    max_steps: int = num(2000, gt=0)  # optimizer updates
    max_minutes: float = num(0.0, ge=0)  # wall budget; 0: none
    sampling: str = one_of(
        "sandwich", SAMPLINGS
    )  # sandwich (largest + smallest + n random) | alternate | uniform (HAT) | fixed
    num_random: int = num(1, ge=0)  # random archs per step beside largest and smallest
    random_every: int = num(1, gt=0)  # the random archs join every k-th step only (1: every step, the paper)
    random_from: int = num(0, ge=0)  # the random archs join from this update on (0: from the start, the paper)
    fixed_arch: str = "largest"  # with sampling=fixed: largest | smallest | path to an arch JSON
    distill: float = num(0.0, ge=0, le=1)  # weight of in-place distillation from the largest arch (0: off)
    lr: float = num(1e-3, gt=0)  # peak learning rate (after warm-up)
    warmup: int = num(400, ge=0)  # updates of linear warm-up
    # after warm-up: inverse_sqrt | cosine (to min_lr at max_steps, HAT's recipe)
    schedule: str = one_of("inverse_sqrt", SCHEDULES)
    min_lr: float = num(0.0, ge=0)  # the cosine schedule's floor
    update_freq: int = num(1, gt=0)  # batches accumulated per optimizer update (fairseq's --update-freq)
    betas: tuple[float, ...] = num((0.9, 0.98), ge=0, lt=1, length=2)  # Adam's (beta1, beta2)
    weight_decay: float = num(0.0001, ge=0)  # AdamW's decoupled weight decay
    label_smoothing: float = num(0.1, ge=0, lt=1)  # epsilon of label-smoothed cross-entropy
    clip_norm: float = num(1.0, ge=0)  # 0: no clipping
    # auto (bf16 only where it is fast: CUDA with bf16, CPUs with native bf16) | fp32 | bf16
    precision: str = one_of("auto", PRECISIONS)
    threads: int = num(0, ge=0)  # torch intra-op threads; 0: torch's default
    log_every: int = num(20, gt=0)  # updates between log records
    valid_every: int = num(250, gt=0)  # updates between validations (NLL, nats per target token)
    ckpt_every: int = num(250, gt=0)  # updates between checkpoints
    keep_last: int = num(3, gt=0)  # checkpoints kept
    tensorboard: bool = False  # also log to RUN/tensorboard
    # with sampling=fixed: also BLEU on a seeded sample of N validation sentences at each validation
    valid_bleu: int = num(0, ge=0)
    # every N-th update: cosines between its archs' gradients to train_log (costs a grad copy per arch); 0: off
    grad_conflict_every: int = num(0, ge=0)


@dataclass(frozen=True)
class DecodeConfig:
    beam: int = num(5, gt=0)  # beam size
    lenpen: float = num(1.0, ge=0)  # scores are divided by length ** lenpen (0: no normalization)
    max_len_a: float = num(1.2, ge=0)  # max output length = a * source length + b
    max_len_b: int = num(10, ge=0)  # see max_len_a
    batch_size: int = num(64, gt=0)  # sentences per decoding batch


@dataclass(frozen=True)
class LatencyConfig:
    num_samples: int = num(200, ge=10)  # archs measured to train the predictor (largest and smallest included)
    holdout: float = num(0.2, gt=0, lt=1)  # fraction held out to report the predictor's accuracy
    src_len: int = num(30, gt=0)  # HAT's protocol: one sentence of this length, beam search for tgt_len steps
    tgt_len: int = num(30, gt=0)  # decoder steps timed (tokens)
    beam: int = num(5, gt=0)  # beam size while timed
    warmup: int = num(5, ge=0)  # untimed runs before timing
    repeats: int = num(10, gt=0)  # timed runs per arch (the median is kept)
    threads: int = num(1, ge=0)  # CPU threads while measuring (fixed, recorded with every sample; 0: 1)
    # cpu | cuda | cuda:N | auto (cuda when available); recorded with every sample
    device: str = field(default="auto", metadata={"pattern": (r"auto|cpu|cuda(:\d+)?", "cpu, cuda, cuda:N or auto")})
    precision: str = one_of("auto", PRECISIONS)  # dtype of the exported model while timed: auto | fp32 | bf16
    hidden: int = num(128, gt=0)  # predictor MLP
    num_layers: int = num(3, gt=0)  # predictor MLP layers
    fit_steps: int = num(2000, gt=0)  # predictor training steps (Adam)
    seed: int = num(1, **SEED)  # seeds the measured archs and the held-out split


@dataclass(frozen=True)
class SearchConfig:
    latency_ms: tuple[float, ...] = num((), gt=0)  # one search per latency budget (ms, via the predictor)
    # budgets between the smallest (0) and largest (1) arch's predicted latency
    latency_fractions: tuple[float, ...] = num((), gt=0, le=1)
    max_params: int = num(0, ge=0)  # extra limits on every budget (0: none)
    params_budgets: tuple[int, ...] = num((), gt=0)  # one search per parameter budget (params-<N>M), no latency
    max_flops: int = num(0, ge=0)  # forward FLOPs (multiply-add = 2) of one input at latency.src_len/tgt_len; 0: none
    max_memory_mb: float = num(0.0, ge=0)  # limit on the estimated peak inference memory (MiB; 0: none)
    population: int = num(125, gt=0)  # archs per generation
    parents: int = num(25, gt=0)  # at most population
    mutations: int = num(50, ge=0)  # children by mutation per generation
    crossovers: int = num(50, ge=0)  # children by crossover per generation
    mutation_prob: float = num(0.3, ge=0, le=1)  # probability that a mutation changes each gene
    generations: int = num(30, gt=0)  # evolution rounds
    # fixed validation subset for the fitness (supernet validation loss); 0: the whole split
    valid_sentences: int = num(300, ge=0)
    # the final pick: the best `rerank` candidates by fitness and the smallest arch, scored again by the family's
    # selection score (MT: validation BLEU, beam of `decode`; BERT: the fitness on more sequences) on a seeded
    # sample of `rerank_sentences` validation items; 0: the fitness alone picks (HAT)
    rerank: int = num(0, ge=0)
    rerank_sentences: int = num(300, ge=0)  # validation items search.rerank scores on; 0: the whole split
    random_baseline: bool = True  # also run random search with the same number of evaluations
    precision: str = one_of("auto", PRECISIONS)  # of the fitness evaluations: auto | fp32 | bf16
    seed: int = num(1, **SEED)  # seeds the search


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = num(0, ge=0)  # fine-tune each search winner this many steps (0: skip)
    lr: float = num(5e-4, gt=0)  # peak learning rate
    warmup: int = num(50, ge=0)  # updates of linear warm-up
    valid_every: int = num(100, gt=0)  # updates between validations
    valid_bleu: int = num(200, ge=0)  # BLEU on this many validation sentences at each validation
    precision: str = one_of("auto", PRECISIONS)  # auto | fp32 | bf16


@dataclass(frozen=True)
class EvalConfig:
    archs: tuple[str, ...] = ("largest", "smallest")  # what `mosnas run` exports and scores
    split: str = ""  # default: data.test
    limit: int = num(0, ge=0)  # score a seeded random sample of N sentences, in corpus order (0: all)
    # sacreBLEU tokenizer; "" chooses by target language as the sacrebleu CLI does
    bleu_tokenize: str = one_of("", BLEU_TOKENIZERS)
    # a paragraph summary.md carries under its title, e.g. what longer training of this recipe gives (from
    # benchmarks/results), so a short demo's numbers are not mistaken for the method's ceiling
    note: str = ""


@dataclass(frozen=True)
class GlueConfig:
    """GLUE fine-tuning of a Hugging Face BERT folder (mosnas.bert.glue.harness): the recipe and its seeded subsets."""

    data: str = "../shared/data/glue"  # one folder per task: train.tsv[.gz], dev.tsv[.gz] (GLUE's layout)
    tasks: tuple[str, ...] = ("SST-2", "STS-B")  # what a pipeline's GLUE stage fine-tunes
    epochs: float = num(0.0, ge=0)  # passes over the training (sub)set, fractions allowed; 0: the task's standard
    lr: float = num(0.0, ge=0)  # peak AdamW learning rate; 0: the task's standard (mosnas.bert.glue.recipe.RECIPES)
    lr_sweep: tuple[float, ...] = num((), gt=0)  # several lrs: each one fine-tuned, the best dev score kept
    batch_size: int = num(32, gt=0)  # examples per step
    # length-bucketed batches: each shuffled run of this many batches is sorted by length (Hugging Face's
    # group_by_length: 50), so a batch pads to similar lengths; 0: plain shuffled batches
    length_buckets: int = num(50, ge=0)
    max_seq_len: int = num(128, gt=0)  # WordPiece tokens per example (pair included), longer ones truncated
    warmup: float = num(0.1, ge=0, lt=1)  # fraction of the steps with linear warm-up, then linear decay to 0
    weight_decay: float = num(0.01, ge=0)  # AdamW's, not on biases and LayerNorm weights
    train_limit: int = num(0, ge=0)  # a seeded random subset of N training examples (0: all)
    dev_limit: int = num(0, ge=0)  # a seeded random subset of N dev examples (0: all)
    seed: int = num(1, **SEED)  # seeds the subsets, and the fine-tuning unless seeds is given
    seeds: tuple[int, ...] = num((), **SEED)  # fine-tune once per seed and report mean and std
    kd_teacher: str = ""  # a classifier folder fine-tuned on the same task (`mosnas glue --save`); "": no KD
    kd_alpha: float = num(0.5, ge=0, le=1)  # loss = (1 - kd_alpha) hard + kd_alpha soft
    kd_temperature: float = num(1.0, gt=0)  # softmax temperature of the soft loss
    kd_loss: str = one_of("ce", KD_LOSSES)  # prediction-layer KD: ce (KL of the softened distributions) | mse of logits
    # Distiller's intermediate representations the student also learns from the KD teacher: any of hidden (each
    # mapped layer's hidden states), attention (their attention distributions), relations (the last layer's
    # Q-Q/K-K/V-V self-attention relations, MiniLMv2); (): the prediction layer only
    kd_intermediate: tuple[str, ...] = field(default=(), metadata={"choices": KD_REPRESENTATIONS})
    kd_layer_map: str = one_of("skip", KD_LAYER_MAPS)  # student layer -> teacher layer: skip (uniform) | last | first
    kd_hidden_loss: str = one_of("mse", KD_HIDDEN_LOSSES)  # per mapped layer pair: mse | cos | pkd | mi (MI-α)
    kd_attention_loss: str = one_of("mse", KD_ATTENTION_LOSSES)  # per mapped layer pair: mse | kl (teacher || student)
    kd_intermediate_weight: float = num(1.0, ge=0)  # loss = prediction-layer KD + this x the intermediate terms' sum
    kd_mi_alpha: float = num(0.9, ge=0, le=1)  # MI-α's α: 1 = InfoNCE, 0 = TUBA (Distiller's sweeps: mostly 0.9)
    precision: str = one_of("auto", PRECISIONS)  # auto | fp32 | bf16
    threads: int = num(0, ge=0)  # torch intra-op threads; 0: torch's default

    def check_kd(self) -> None:
        """Raise ConfigError for a KD pipeline that cannot run: intermediate representations without a teacher,
        or one named twice."""
        if self.kd_intermediate and not self.kd_teacher:
            raise ConfigError(
                f"glue.kd_intermediate={','.join(self.kd_intermediate)} distils from a fine-tuned teacher: "
                "give glue.kd_teacher (--kd-teacher)"
            )
        if len(set(self.kd_intermediate)) != len(self.kd_intermediate):
            raise ConfigError(f"glue.kd_intermediate names a representation twice: {','.join(self.kd_intermediate)}")
