"""Names for the transformers objects the engine handles, typed loosely on purpose."""

from __future__ import annotations

from typing import Any, TypeAlias

# transformers' objects: a Kosmos2ForConditionalGeneration, its Kosmos2Config, one of its
# submodules (a text block, the text model, lm_head) and its tokenizer. To a type checker their
# sub-configs are ``dict | PreTrainedConfig | None``, a submodule's attribute ``Tensor | Module``
# and a token id ``int | list[int]``, so they are typed loosely, under names that say what they are.
Kosmos2Model: TypeAlias = Any
Kosmos2ModelConfig: TypeAlias = Any
Kosmos2Submodule: TypeAlias = Any
Kosmos2Tokenizer: TypeAlias = Any
