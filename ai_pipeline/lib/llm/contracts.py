"""Contracts of the training-data lane: chat messages, feedback events and transcript pairs.

Row-level rules only, in the vocabulary `lib.ingest.validation` compiles to Polars (so the events lane's
quarantine, conservation and duplicate checks serve this lane unchanged). The rules that need a whole conversation
(an orphan parent, roles that do not alternate) are in `lib.llm.threads`.

- `ChatMessage`: one message of a conversation tree (OpenAssistant's export shape, flattened by the landing reader:
  `read.tree` in the source's declaration). Quarantined when its text is empty or only whitespace, its language is
  not a language code (`LANGUAGE_PATTERN`), it was deleted, or a label or rank is out of range.
- `Feedback`: a user's rating (1-5) of one assistant message, from the feedback endpoint.
- `TranscriptPair`: two `\\n\\nHuman: ...\\n\\nAssistant: ...` transcripts that differ in the last reply (HH-RLHF).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from ai_pipeline.lib.ingest.contracts import (
    EventTime,
    Identifier,
    Label,
    must_be_false,
    parse_boolean,
    parse_integer,
    parse_number,
)

# ISO 639-1.
LANGUAGES = tuple(
    """aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el
    en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja
    jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd
    ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss
    st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu""".split()
)
# A known two-letter code, or a three-letter one (ISO 639-2/3: Bavarian is `bar`), with an optional region or script
# (`pt-BR`, `zh-Hant`). Anything else (`xx`, `english`, `EN`) is an unknown language.
LANGUAGE_PATTERN = rf"^({'|'.join(LANGUAGES)}|[a-z]{{3}})(-[A-Za-z0-9]{{2,8}})?$"
# Some character that is not whitespace: an empty or blank text says nothing.
NOT_BLANK = r"\S"
MAX_TEXT = 100_000
ROLES = ("prompter", "assistant")

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=NOT_BLANK)]
Share = Annotated[float, BeforeValidator(parse_number), Field(ge=0, le=1)]
Count = Annotated[int, BeforeValidator(parse_integer), Field(ge=0, le=1_000_000)]


class ChatMessage(BaseModel):
    """One message of a conversation; `parent_id` is null for the conversation's first message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message_id: Identifier
    conversation_id: Identifier = Field(validation_alias=AliasChoices("conversation_id", "message_tree_id"))
    parent_id: Identifier | None = None
    role: Literal[ROLES]
    text: Text
    lang: Annotated[str, StringConstraints(pattern=LANGUAGE_PATTERN)]
    created_at: EventTime = Field(validation_alias=AliasChoices("created_at", "created_date"))
    user_id: Identifier | None = None
    deleted: Annotated[bool, BeforeValidator(parse_boolean), AfterValidator(must_be_false)] | None = None
    # Among the replies to the same message: 0 is the best (volunteers' ranking).
    rank: Annotated[int, BeforeValidator(parse_integer), Field(ge=0, le=1000)] | None = None
    # Volunteers' label averages in [0, 1], where labelled.
    quality: Share | None = None
    spam: Share | None = None
    pii: Share | None = None
    toxicity: Share | None = None
    thumbs_up: Count | None = None
    thumbs_down: Count | None = None
    tree_state: Label | None = None


class Feedback(BaseModel):
    """A user's rating of one message of a conversation."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    feedback_id: Identifier
    conversation_id: Identifier
    message_id: Identifier
    rating: Annotated[int, BeforeValidator(parse_integer), Field(ge=1, le=5)]
    text: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    user_id: Identifier
    created_at: EventTime


TRANSCRIPT_PATTERN = r"^\s*Human: [\s\S]*\n\nAssistant: [\s\S]*$"
Transcript = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=TRANSCRIPT_PATTERN)]


class TranscriptPair(BaseModel):
    """Two transcripts of one conversation that differ in the last assistant reply; `chosen` is the better."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    chosen: Transcript
    rejected: Transcript
