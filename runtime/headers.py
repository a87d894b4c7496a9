"""Headers hookyard puts on what it sends, read back by the code that receives it.

Written by the Gmail send action (`actions/gmail.py`) and read back by the mailbox sync
(`actions/gmail_client.sent_by_hookyard`, called from worker/gmail/).
"""

from __future__ import annotations

# The header the send action puts on every message it sends; the sync skips such messages so
# a workflow that mails its own mailbox cannot trigger itself forever.
EXECUTION_HEADER = "X-Hookyard-Execution"
