"""`@name` and `@room` in a message's text: who it mentions, decided when it is stored.

Only members of the room count: a mention of someone who cannot see the room notifies
nobody and is not recorded (so it leaks nothing either).
"""

from __future__ import annotations

import re

# A username (3-32 of letters, digits, "_", "." and "-") after an "@" that does not
# follow a word character (so e-mail addresses do not mention anyone).
MENTION_RE = re.compile(r"(?<![\w@.+-])@([A-Za-z0-9_.-]{3,32})(?![\w-])")
ROOM_WORDS = frozenset({"room", "channel", "here", "everyone"})
MAX_NAMES = 20  # names looked up per message


def mentioned(body: str) -> tuple[list[str], bool]:
    """The lowercase names a text mentions (at most MAX_NAMES, in order, once each),
    and whether it mentions the whole room."""
    if "@" not in body:
        return [], False
    names: list[str] = []
    room = False
    for match in MENTION_RE.finditer(body):
        name = match.group(1).rstrip(".").lower()
        if name in ROOM_WORDS:
            room = True
        elif name not in names and len(names) < MAX_NAMES:
            names.append(name)
    return names, room
