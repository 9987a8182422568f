"""One call's usage: the tokens the upstream reported for it."""

from typing import NamedTuple


class Usage(NamedTuple):
    """Tokens of one call as the upstream reported them. Cached input tokens are part of
    the input tokens, as OpenAI counts them. Where a call's usage is unknown, callers hold
    None instead, never zeros."""

    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    total_tokens: int


# A call that used nothing: refused before forwarding, or not a token-priced call.
NO_USAGE = Usage(0, 0, 0, 0)
