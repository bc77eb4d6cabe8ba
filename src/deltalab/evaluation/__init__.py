"""Evaluation: batched greedy and sampled generation, answer extraction (`answers`), GSM8K/probe
scoring (`scoring`), behavior metrics (`behavior`), paired statistics (`stats`), `compare`."""
