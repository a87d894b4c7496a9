"""Headers hookyard puts on what it sends, read back by the code that receives it.

Shared by the Gmail send action (`actions/gmail.py`), which writes it, and the Gmail trigger
(`triggers/gmail.py`), which reads it: the two sit side by side and must not import each other.
"""

from __future__ import annotations

# The header the send action puts on every message it sends; the sync skips such messages so
# a workflow that mails its own mailbox cannot trigger itself forever.
EXECUTION_HEADER = "X-Hookyard-Execution"
