"""Complete transformers exports: weights and config plus everything `AutoProcessor` needs, so that transformers
reproduces `dsvl-chat` (docs/finetune.md); `dsvl_chat.json` records the training system prompt for dsvl's tools."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .vlm import VisionLanguageModel

log = logging.getLogger(__name__)

CHAT_FILE = "dsvl_chat.json"  # {"system_prompt": str | null}: the prompt the model was trained with
IMAGE_TOKEN = "<image_placeholder>"
SEP = "\\n\\n"  # a jinja string escape: the template's "\n\n"


def deepseek_chat_template(system_prompt: str | None, eos_token: str, image_token: str = IMAGE_TOKEN) -> str:
    """A jinja chat template rendering DeepSeek-VL's "deepseek" format, as `dsvl.data.chat` does:
    `{system}\\n\\nUser: {content}\\n\\nAssistant: {answer}<eos>...Assistant:`; a leading system message replaces
    `system_prompt` (None or "" = no system block); content parts `{"type": "image"}` render `image_token`."""
    default = json.dumps(system_prompt or "")
    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{ content }}"
        "{%- else -%}{%- for part in content -%}"
        f"{{%- if part['type'] == 'image' -%}}{{{{ {json.dumps(image_token)} }}}}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        f"{{%- set system = {default} -%}}"
        "{%- set ns = namespace(messages=messages) -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = render(messages[0]['content']) -%}{%- set ns.messages = messages[1:] -%}"
        "{%- endif -%}"
        f"{{%- if system -%}}{{{{ system }}}}{{{{ '{SEP}' }}}}{{%- endif -%}}"
        "{%- for message in ns.messages -%}"
        f"{{%- if message['role'] == 'user' -%}}{{{{ 'User: ' }}}}{{{{ render(message['content']) }}}}{{{{ '{SEP}' }}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{{{ 'Assistant: ' }}}}{{{{ render(message['content']) }}}}{{{{ {json.dumps(eos_token)} }}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
    )


def hf_processor(model: VisionLanguageModel, tokenizer: Any, system_prompt: str | None) -> Any:
    """transformers' DeepseekVL(Hybrid)Processor for `model`: its image processor, `tokenizer`, the real
    `num_image_tokens` and the deepseek chat template with `system_prompt` as default."""
    from transformers import DeepseekVLHybridProcessor, DeepseekVLProcessor

    from .hf_interop import hf_image_processor

    if getattr(tokenizer, "image_token", None) != IMAGE_TOKEN:
        raise ConfigError(f"the tokenizer has no image_token {IMAGE_TOKEN!r} (extra_special_tokens) as DeepseekVLProcessor "
                          "needs; save it with extra_special_tokens={'image_token': '<image_placeholder>'}")
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != model.image_token_id:
        raise ConfigError(f"the tokenizer's {IMAGE_TOKEN} is id {image_id} but the model's image_token_id is {model.image_token_id}")
    cls = DeepseekVLHybridProcessor if model.vision_spec.input("high_res_pixel_values") else DeepseekVLProcessor
    return cls(
        image_processor=hf_image_processor(model.vision_spec),
        tokenizer=tokenizer,
        chat_template=deepseek_chat_template(system_prompt, tokenizer.eos_token),
        num_image_tokens=model.num_image_tokens,
    )


def export_pretrained(model: VisionLanguageModel, out: str | Path, tokenizer: Any = None, system_prompt: str | None = None) -> Path:
    """Weights + config (merged when LoRA-wrapped) and, with a tokenizer, the processor, chat template and
    `dsvl_chat.json`: a directory transformers runs end to end (`pipeline("image-text-to-text")` included)."""
    out = Path(out)
    processor = hf_processor(model, tokenizer, system_prompt) if tokenizer is not None else None  # errors before writing
    out.mkdir(parents=True, exist_ok=True)
    generation = model.llm.generation_config
    if tokenizer is not None:  # `model.generate(**inputs)` stops where dsvl-chat stops
        generation.bos_token_id, generation.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        generation.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(str(out))
        write_system_prompt(out, system_prompt)
    log.info("exported %s", out)
    return out


def write_system_prompt(directory: str | Path, system_prompt: str | None) -> None:
    """Record in an export or adapter directory the system prompt its model was trained with (None: none)."""
    (Path(directory) / CHAT_FILE).write_text(json.dumps({"system_prompt": system_prompt or None}, indent=2) + "\n")


def exported_system_prompt(export_dir: str | Path, default: str | None) -> str | None:
    """The system prompt an export's (or adapter's) model was trained with (`dsvl_chat.json`), else `default`."""
    path = Path(export_dir) / CHAT_FILE
    return (json.loads(path.read_text()).get("system_prompt") or None) if path.is_file() else default


def merge_adapter(base: str | Path, adapter_dir: str | Path, out: str | Path, system_prompt: str | None = None) -> Path:
    """A complete export of `base` (and its tokenizer) with a peft LoRA adapter merged (QLoRA runs: onto the bf16
    base); the system prompt is the adapter's `dsvl_chat.json`, else `system_prompt`."""
    from transformers import AutoTokenizer

    model = VisionLanguageModel.from_pretrained(base, adapter=adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    return export_pretrained(model, out, tokenizer, exported_system_prompt(adapter_dir, system_prompt))
