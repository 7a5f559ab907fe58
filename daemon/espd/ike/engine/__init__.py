"""The IKE engine (dispatch, retransmission, timers) and its UDP transport."""
