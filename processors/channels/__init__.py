"""Channels: which derivatives each channel gets, and the rules a channel's files must meet.

- presets.yaml / presets.py: the presets, as data (size, format, background, framing, rules);
- product_mask.py: where the product is in the chosen image, so crops keep it in frame;
- rules.py: the marketplace rule checks, run on each derivative after it is encoded;
- render.py: one job's derivatives for its channel, checked, with their verdicts.
"""
