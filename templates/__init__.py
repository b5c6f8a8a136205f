"""Jinja2 templates of pgolf build (installed as package data `builder.templates`)."""
