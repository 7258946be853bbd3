"""RLHF interactions: their rules, and the column arrays a batch insert writes with `unnest`."""

from __future__ import annotations

from dataclasses import dataclass, field

from zerodb_batch import limits
from zerodb_batch.domain.records import Columns
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


@dataclass
class InteractionColumns(Columns):
    """Valid interactions as parallel arrays (one per column). Each takes its id from `new_ids`
    by its request index: made up front, a batch at a time (domain/ids.py); a tuple, so that
    since() leaves it whole."""

    new_ids: tuple[str, ...] = ()
    ids: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    feedback: list[str | None] = field(default_factory=list)
    rewards: list[float | None] = field(default_factory=list)
    models: list[str | None] = field(default_factory=list)
    session_ids: list[str | None] = field(default_factory=list)
    agent_ids: list[str | None] = field(default_factory=list)
    human_feedback: list[str | None] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    contexts: list[str | None] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)  # JSON text

    def add(
        self, index: int, prompt: str, response: str, feedback: str | None, reward: float | None,
        model: str, session_id: str, agent_id: str, human_feedback: str, tags: list[str],
        context: str, metadata: str,
    ) -> None:  # fmt: skip
        self.index.append(index)
        self.ids.append(self.new_ids[index])
        self.prompts.append(prompt)
        self.responses.append(response)
        self.feedback.append(feedback)
        self.rewards.append(reward)
        # An empty optional text is no value (NULL), as the streamed path stores it.
        self.models.append(model or None)
        self.session_ids.append(session_id or None)
        self.agent_ids.append(agent_id or None)
        self.human_feedback.append(human_feedback or None)
        self.tags.append(tags)
        self.contexts.append(context or None)
        self.metadata.append(metadata)
