"""An exported model's folder: the one owner of its file names (beside `RunDir`, the run folder's owner).

A model folder holds a dense subnet in its family's format (`model.safetensors`, `config.json`, the tokenizer),
the arch it was collapsed for (`arch.json`) and, written last, its record (`export.json`: family, parameters,
provenance and what it was made from); what is made from it lands beside: the re-measured latency
(`latency.json`), evaluations (`eval.<split>.json`) and GLUE results (`glue/<task>/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosnas.workspace.files import read_json_file


@dataclass(frozen=True)
class ModelDir:
    """Every path of an exported model folder."""

    root: Path

    weights = property(lambda self: self.root / "model.safetensors")
    config = property(lambda self: self.root / "config.json")
    arch = property(lambda self: self.root / "arch.json")  # the arch the supernet was collapsed for
    record = property(lambda self: self.root / "export.json")  # written last: the folder is complete once it exists
    latency = property(lambda self: self.root / "latency.json")  # re-measured latency and peak memory

    def eval(self, split: str) -> Path:
        """The evaluation result on `split` (e.g. test_2016_flickr, distill)."""
        return self.root / f"eval.{split}.json"

    def hypotheses(self, split: str, lang: str) -> Path:
        """The translations of `split` into `lang`, one line per sentence (MT)."""
        return self.root / f"hyp.{split}.{lang}"

    def glue(self, task: str) -> Path:
        """The folder of the GLUE results of `task` (`mosnas glue`, a pipeline's GLUE stage)."""
        return self.root / "glue" / task

    def info(self) -> dict[str, Any]:
        """The record (export.json) as a dict; {} when the folder has none (not an export, or an unfinished one)."""
        return read_json_file(self.record, "model record") if self.record.is_file() else {}

    def made_from(self) -> dict[str, Any] | None:
        """What the model itself was made from (the record's `made_from`: arch and checkpoint), or None."""
        return self.info().get("made_from")

    def check_tokenizer(self, model_vocab: int, tokenizer_vocab: int) -> None:
        """Refuse a tokenizer that is not the model's: the file export.json's provenance names (`tokenizer`)
        whose SHA-256 differs from the recorded one (e.g. another run's spm.model copied in), or a vocabulary
        of `tokenizer_vocab` entries larger than the model's `model_vocab` embedding rows (ids the model has no
        embedding for). A folder without a record (any Hugging Face BERT) gets the size check only.
        Raises CheckpointError naming the file."""
        from mosnas.errors import CheckpointError
        from mosnas.workspace.paths import file_sha256

        recorded = (self.info().get("provenance") or {}).get("tokenizer") or {}
        name, sha = recorded.get("file"), recorded.get("sha256")
        if name and sha and (self.root / name).is_file() and (found := file_sha256(self.root / name)) != sha:
            raise CheckpointError(
                f"{self.root / name} is not the tokenizer this model was exported with (sha256 {found[:12]}, "
                f"its export.json records {sha[:12]}): put the model's own {name} back"
            )
        if tokenizer_vocab > model_vocab:
            raise CheckpointError(
                f"{self.root}: its tokenizer has {tokenizer_vocab:,} entries but the model embeds {model_vocab:,} "
                "(a tokenizer of another model)"
            )

    def read_arch(self) -> dict[str, Any] | None:
        """The arch (arch.json) as a dict, or None when the folder has none."""
        return read_json_file(self.arch, "arch") if self.arch.is_file() else None


# the files of a model folder that say what it is (kept with results made from it, e.g. GLUE's)
RECORD_FILES = (ModelDir(Path()).record.name, ModelDir(Path()).arch.name)
