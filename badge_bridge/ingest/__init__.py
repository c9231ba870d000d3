"""What the bridge does with each message from a device or a console, whatever protocol carried it.

Drivers hand in contract messages (``controllers.contract``) with an ``ack`` to call once everything the
message caused is committed to the audit log; they hand refused input to ``reject``. Here a credential
becomes a decision and a command, a door contact becomes door state and alarms, and every one of those
becomes an audited event. The source is acknowledged with the last event it caused: the writer commits in
order, so when that one is committed all are.

One module per concern, behind the ``Processor`` facade (one lock, one clock):

- ``admission``: refusals, the time window and the replay guard;
- ``access``: credential to decision and command, and the wait for the holder's face;
- ``door_events``: door contacts, exit requests, tamper, and the door timers;
- ``liveness``: controllers and bus readers online or offline, and when each was heard;
- ``console``: operators' unlocks, locks and lockdowns; ``console_auth``: whether the console signed one, for
  an enabled user with the role, in an open session;
- ``wiring``, ``commands``, ``counters``: the site's wiring, command ids, the metrics' counts.
"""

from badge_bridge.ingest.admission import RECENT_IDS, describe_validation
from badge_bridge.ingest.processor import Processor

__all__ = ["RECENT_IDS", "Processor", "describe_validation"]
