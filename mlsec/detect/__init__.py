"""Detectors shared by several scanners (text in, neutral hits out).

A detector knows nothing about artifacts, findings or the rule ids of a particular scanner: it
takes text and returns small frozen hits, so the code, notebook, configuration and dataset
scanners can all call the same one. :mod:`mlsec.detect.secrets` finds credentials
(``find_secrets``); the personal-data detector lives beside it.
"""
