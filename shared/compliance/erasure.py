"""Erasure on request (GDPR article 17): one person's number is removed from every broadcast's messages, from
the raw status callbacks of those messages, and so from every export, and optionally from Twilio's copies.

What stays, and why:
- the opt-out list keeps the number if it is on it: a suppression must survive erasure, or the next upload of an
  old list would message someone who asked not to be messaged. Keeping it for that one purpose is the minimum
  needed to honour the objection (GDPR art. 17(3)(b) and 21; regulators expect suppression lists to be kept);
- each message's state, outcome, error code and SIDs, without the number: the broadcast's counts still add up;
- Twilio keeps its own copy of each message (body and `To`) until it is deleted there, which the caller may ask
  for (`delete_at_twilio`): shared.twilio.gateway.delete_messages, one `DELETE Messages/{Sid}.json` per SID.

Messages still unsent to the number are canceled first (never sent later to a number we no longer hold). While a
send to it is in flight (`sending`, `unknown`), nothing is written: the sweeper may need the number to reconcile
it, and the caller is asked to try again once it resolved (within CLAIM_LEASE_SECONDS).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from shared.broadcasts import store as broadcast_store
from shared.messages import store as message_store
from shared.platform.models import OptedOutNumber
from shared.receipts.events import redact_events


@dataclass(frozen=True)
class Erasure:
    messages: int  # messages whose number (and template values) were removed
    canceled: int  # of those, unsent ones canceled
    status_events: int  # raw callbacks stripped to what Twilio reported
    twilio_sids: list[str]  # what Twilio may still hold: current and archived attempts
    kept_on_opt_out_list: bool
    in_flight: int = 0  # > 0: nothing was written; try again after the send resolved


def erase_recipient(session: Session, number: str) -> Erasure:
    """Erase `number` (E.164) from the database; the caller commits (or rolls back when `in_flight`)."""
    found = message_store.messages_to(session, number)
    # The service-wide lock order: broadcast rows first, then their messages.
    broadcast_ids = sorted({message.broadcast_id for message in found})
    broadcast_store.lock(session, broadcast_ids)
    erased = message_store.erase_number(session, number)
    opted_out = session.get(OptedOutNumber, number) is not None
    if erased.in_flight:
        return Erasure(0, 0, 0, [], opted_out, in_flight=erased.in_flight)
    events = redact_events(session, erased.twilio_sids, erased.message_ids)
    if erased.canceled:
        for broadcast_id in broadcast_ids:  # the canceled messages may have been the last ones owing an outcome
            broadcast_store.submit_if_finished(session, broadcast_id)
    return Erasure(len(erased.message_ids), erased.canceled, events, erased.twilio_sids, opted_out)
