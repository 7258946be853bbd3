"""RLHF interactions: their rules, declared once."""

from __future__ import annotations

from zerodb_batch import limits
from zerodb_batch.domain.rules import (
    Body,
    Choice,
    JsonObject,
    Number,
    Rules,
    Tags,
    Text,
    TextOrMember,
)

# The values of a valid interaction, in this order, are what a Rows sink's `add` receives. Ids are
# the server's own (a client's `id` is ignored), so the entity is not keyed.
INTERACTION = Rules(
    "Interaction",
    Body("prompt", limits.MAX_PROMPT_BYTES, required=True),
    Body("response", limits.MAX_PROMPT_BYTES),
    Choice("feedback", limits.FEEDBACK, default=None),
    Number("reward", -1.0, 1.0, default=None),
    TextOrMember("model", limits.MAX_MODEL_CHARS, struct="metadata", key="model"),
    Text("session_id"),
    Text("agent_id"),
    Body("human_feedback", limits.MAX_HUMAN_FEEDBACK_BYTES),
    Tags("tags"),
    Body("context", limits.MAX_PROMPT_BYTES),
    JsonObject("metadata", limits.MAX_METADATA_BYTES),
)
