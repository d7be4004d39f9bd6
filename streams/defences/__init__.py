"""The defences against poisoned reports, in one place: the rules a report must pass and
the trust it earns (``rules``), their checks against live state (``admission``), and the
grouping of quarantined reports for review (``review_groups``). The report agent
(``l2loop.streams.reports``) and the HTTP service apply them."""
