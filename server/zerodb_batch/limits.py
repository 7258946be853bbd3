"""Every limit of the API as a named constant (the protos' comments state the same numbers)."""

from typing import Final

MAX_MEMORY_UPSERT: Final = 500
MAX_MEMORY_UPDATE: Final = 500
MAX_MEMORY_DELETE: Final = 500
MAX_MEMORY_GET: Final = 1000
MAX_QUERY_OPERATIONS: Final = 50
MAX_EVENTS_PUBLISH: Final = 100
MAX_RLHF_INTERACTIONS: Final = 1000

# pgvector indexes `vector` up to 2000 dimensions with HNSW and `halfvec` up to 4000: a namespace
# above 2000 is indexed as halfvec, and 4000 is the largest dimension a namespace can have.
MAX_VECTOR_DIM: Final = 4000
MAX_HNSW_VECTOR_DIM: Final = 2000
DEFAULT_TOP_K: Final = 10
MAX_TOP_K: Final = 1000
DEFAULT_VECTOR_NAMESPACE: Final = "default"
MAX_NAMESPACE_CHARS: Final = 128
MAX_DOCUMENT_BYTES: Final = 64 * 1024  # a vector's source text
MAX_SEARCH_LIMIT: Final = 100  # SearchVectors' earlier `limit`; `top_k` goes to MAX_TOP_K
MAX_VECTOR_IDS: Final = 1000  # BatchGetVectors, BatchDeleteVectors
DEFAULT_NAMESPACES_PAGE_SIZE: Final = 100

MAX_ID_CHARS: Final = 128  # ids, session/agent/entity ids, request ids, load ids
MAX_CONTENT_BYTES: Final = 64 * 1024
MAX_METADATA_BYTES: Final = 64 * 1024
MAX_TAGS: Final = 64
MAX_TAG_CHARS: Final = 128

MAX_STREAM_CHUNK_RECORDS: Final = 5000
MAX_FAILURES_REPORTED: Final = 1000  # per streamed load response

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000

MEMORY_TYPES: Final = ("working", "episodic", "semantic")
DEFAULT_MEMORY_TYPE: Final = "episodic"
DEFAULT_IMPORTANCE: Final = 0.5

MAX_PROMPT_BYTES: Final = 1024 * 1024  # also the response and the context
MAX_HUMAN_FEEDBACK_BYTES: Final = 64 * 1024
MAX_MODEL_CHARS: Final = 256
FEEDBACK: Final = ("positive", "negative", "mixed")
DEFAULT_INTERACTIONS_PAGE_SIZE: Final = 100
EXPORT_FORMATS: Final = ("jsonl", "trl", "openai", "openai-preference")

MAX_TOPIC_CHARS: Final = 256
MAX_EVENT_PAYLOAD_BYTES: Final = 64 * 1024
MAX_TOPIC_FILTERS: Final = 100  # per subscription
MAX_ACK_IDS: Final = 1000
DEFAULT_EVENTS_PAGE_SIZE: Final = 100
DEFAULT_HEARTBEAT_SECONDS: Final = 15
MIN_HEARTBEAT_SECONDS: Final = 1
MAX_HEARTBEAT_SECONDS: Final = 300
DEFAULT_MAX_UNACKED: Final = 1000
MAX_UNACKED: Final = 10_000
DEFAULT_REDELIVER_SECONDS: Final = 30
MIN_REDELIVER_SECONDS: Final = 1
MAX_REDELIVER_SECONDS: Final = 3600
MAX_JSON_DEPTH: Final = 20  # levels of objects and arrays in metadata, payloads and rows

# Tables (TableService; the proto comments state the same numbers).
MAX_TABLE_NAME_CHARS: Final = 128
MAX_TABLE_DESCRIPTION_CHARS: Final = 1024
MAX_INDEXED_FIELDS: Final = 8  # per table
MAX_FIELD_PATH_CHARS: Final = 256
MAX_FIELD_PATH_PARTS: Final = 16  # nesting depth of a dotted path
MAX_FILTER_DEPTH: Final = 8  # nesting of $and / $or / $not
MAX_FILTER_CONDITIONS: Final = 256  # leaf conditions in one filter
MAX_IN_VALUES: Final = 1000  # values of one $in / $nin
MAX_REGEX_CHARS: Final = 512
MAX_REGEX_SIZE: Final = 10_000  # atoms after expanding bounded repetitions
MAX_REGEX_REPEAT: Final = 255  # PostgreSQL's own bound on {m,n}
DEFAULT_QUERY_LIMIT: Final = 100
MAX_QUERY_LIMIT: Final = 1000
MAX_SORT_KEYS: Final = 8
MAX_PROJECTION_FIELDS: Final = 64
MAX_INSERT_ROWS: Final = 1000  # per insert operation
MAX_ROW_BYTES: Final = 1024 * 1024  # one row's row_data as JSON
MAX_UPDATE_FIELDS: Final = 64  # fields named by one update, over all its operators
DEFAULT_TABLES_PAGE_SIZE: Final = 100  # ListTables

# What an API key may be allowed to do; each RPC needs one of them (interceptors/auth.py). A key
# made without naming scopes gets all three, as every key had before scopes existed.
KEY_SCOPES: Final = ("read", "write", "admin")
