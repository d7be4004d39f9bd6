"""The defences against poisoned reports, in one place: the rules a report must pass and
the trust it earns (``rules``), their checks against live state (``admission``), the support
each curated example gathers (``support``), the review queue of quarantined reports and the
decisions on them (``review``), and the grouping of those reports for review
(``review_groups``). The report agent (``l2loop.streams.reports``), the HTTP service and
``l2loop review`` apply them."""
