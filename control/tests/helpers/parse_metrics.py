#!/usr/bin/env python3
"""Parses a metrics exposition from stdin with the Prometheus Python client's parser.

Usage: parse_metrics.py text|openmetrics
Prints JSON: {"families": {name: type}, "samples": [[name, labels, value], ...]}.
Exits non-zero (with the parser's error) when the text does not parse.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

text = sys.stdin.read()
parse = parse_text if sys.argv[1] == "text" else parse_openmetrics
families = {}
samples = []
for family in parse(text):
    if family.name in families:
        sys.exit(f"family {family.name} appears twice")
    families[family.name] = family.type
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
json.dump({"families": families, "samples": samples}, sys.stdout)
