"""Figures computed from records: the metric registry, the per-request rates, the
summary, SLOs, the roofline and the noise statistics compare relies on."""
