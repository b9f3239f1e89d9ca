#!/usr/bin/env python3
"""Floor for a Python poller on requests (agentcom's own stack): one GET of the mailbox, JSON parsed, one line printed.

usage: AGENTCOM_HUB_URL=http://127.0.0.1:4000 AGENTCOM_AGENT_ID=bob AGENTCOM_TOKEN=... \
       python3 poll_min_requests.py [SINCE]
"""

import os
import sys

import requests

hub, agent, token = (os.environ[k] for k in ("AGENTCOM_HUB_URL", "AGENTCOM_AGENT_ID", "AGENTCOM_TOKEN"))
since = sys.argv[1] if len(sys.argv) > 1 else "0"
r = requests.get(f"{hub}/api/mailbox/{agent}?since={since}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
body = r.json()
print(f"{body['count']} message(s), last_seq {body['last_seq']}")
