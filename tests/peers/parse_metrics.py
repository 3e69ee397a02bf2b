#!/usr/bin/env python3
"""Parses a Prometheus text-format exposition with prometheus_client's own
parser (run with .peers/prom/bin/python) and prints its samples as JSON.

    parse_metrics.py URL

prints one JSON object: {"families": {name: type}, "samples": [[name,
{labels}, value], ...]}. A body the parser rejects exits non-zero with the
parser's error on stderr.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    text = response.read().decode("utf-8")

families = {}
samples = []
for family in text_string_to_metric_families(text):
    families[family.name] = family.type
    for sample in family.samples:
        samples.append([sample.name, dict(sample.labels), sample.value])
print(json.dumps({"families": families, "samples": samples}))
