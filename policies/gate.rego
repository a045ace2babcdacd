# METADATA
# title: mlsec default gate
# description: |
#   Decides whether a scanned artifact set may enter a lifecycle stage. Python supplies facts
#   (input document mlsec.policy-input/v1: findings aggregated per rule and artifact with a
#   severity rank, waiver facts, scanner errors, skips, artifacts); stage settings come from
#   data.mlsec.config (policies/data.json merged with the project's [tool.mlsec]).
#   Outputs are arrays built by comprehensions: partial sets are quadratic on regopy.
#   Team policies add rules in package mlsec.custom.<name> with `deny` and `warn` sets of
#   strings or {"rule_id", "artifact", "reason"} objects.
package mlsec.gate

import rego.v1

stage := data.mlsec.config.stages[input.stage]

block_rank := stage.block_rank

warn_rank := stage.warn_rank

# -- waivers ---------------------------------------------------------------------------------

# Why a claimed suppression is not accepted at this stage ("" when it is).
waiver_rejection(f) := "inline ignores are not accepted at this stage" if {
	f.waiver.source == "inline"
	not stage.allow_inline_ignores
} else := "waivers are not accepted at this stage" if {
	f.waiver.source == "waiver"
	not stage.allow_waivers
} else := concat("", ["waiver ", f.waiver.id, " has no owner"]) if {
	f.waiver.source == "waiver"
	stage.waiver_requires_owner
	f.waiver.owner == ""
} else := concat("", ["waiver ", f.waiver.id, " has no reason"]) if {
	f.waiver.source == "waiver"
	stage.waiver_requires_reason
	f.waiver.reason == ""
} else := ""

accepted := [f | some f in input.suppressed; waiver_rejection(f) == ""]

rejected := [f | some f in input.suppressed; waiver_rejection(f) != ""]

# -- findings --------------------------------------------------------------------------------

# Verdicts about findings name the finding entry (`finding`: its id) and the policy; Python
# writes the sentence from the entry (message text is not part of the input: input size is
# what makes regopy slow). Messages built here use concat, never sprintf("... %s ..."): rego-cpp
# 1.5.2 renders a builtin's result (or a literal passed through a variable or function argument)
# under %s *with its quotes*, corrupting the output. See policies/README.md.

blocks_note := concat("", [input.stage, " blocks at ", stage.block_at])

severity_violations := [v |
	some f in input.findings
	f.rank >= block_rank
	v := {"finding": f.id, "policy": "mlsec.gate.severity", "note": blocks_note}
]

rejected_waiver_violations := [v |
	some f in rejected
	f.rank >= block_rank
	v := {"finding": f.id, "policy": "mlsec.gate.waivers", "note": concat("", ["suppression not accepted: ", waiver_rejection(f)])}
]

severity_warnings := array.concat(
	[v |
		some f in input.findings
		f.rank < block_rank
		f.rank >= warn_rank
		v := {"finding": f.id, "policy": "mlsec.gate.severity"}
	],
	[v |
		some f in rejected
		f.rank < block_rank
		f.rank >= warn_rank
		v := {"finding": f.id, "policy": "mlsec.gate.waivers", "note": concat("", ["suppression not accepted: ", waiver_rejection(f)])}
	],
)

# -- completeness ----------------------------------------------------------------------------

error_results := [v |
	some e in input.errors
	v := {
		"rule_id": "MLSEC-GATE-ERROR", "artifact": e.path, "severity": "high", "count": 1,
		"policy": "mlsec.gate.completeness",
		"reason": concat("", ["scanner ", e.scanner, " could not complete on ", e.path, ": ", e.message]),
	}
]

skip_results := [v |
	some s in input.skipped
	v := {
		"rule_id": "MLSEC-GATE-SKIPPED", "artifact": s.path, "severity": "medium", "count": 1,
		"policy": "mlsec.gate.completeness",
		"reason": concat("", [s.path, " was not scanned (", s.code, "): ", s.reason]),
	}
]

completeness_violations := array.concat(
	[v | stage.fail_on_scanner_error; some v in error_results],
	[v | stage.fail_on_skipped; some v in skip_results],
)

completeness_warnings := array.concat(
	[v | not stage.fail_on_scanner_error; some v in error_results],
	[v | not stage.fail_on_skipped; some v in skip_results],
)

# -- provenance ------------------------------------------------------------------------------

models := [a | some a in input.artifacts; a.kind == "model"]

hash_violations := [v |
	stage.require_hashes
	some a in models
	a.sha256 == ""
	v := {
		"rule_id": "MLSEC-GATE-HASH", "artifact": a.path, "severity": "high", "count": 1,
		"policy": "mlsec.gate.provenance", "reason": concat("", ["model ", a.path, " has no SHA-256"]),
	}
]

format_violations := [v |
	allowed := object.get(stage, "allowed_model_formats", [])
	count(allowed) > 0
	some a in models
	not a.format in allowed
	v := {
		"rule_id": "MLSEC-GATE-FORMAT", "artifact": a.path, "severity": "high", "count": 1,
		"policy": "mlsec.gate.provenance",
		"reason": concat("", ["model ", a.path, " is ", a.format, "; ", input.stage, " allows only ", concat(", ", allowed)]),
	}
]

bom_models := object.get(input, ["bom", "models"], [])

card_violations := [v |
	stage.require_model_card
	some m in bom_models
	not m.has_model_card
	v := {
		"rule_id": "MLSEC-GATE-MODELCARD", "artifact": m.path, "severity": "medium", "count": 1,
		"policy": "mlsec.gate.provenance", "reason": concat("", ["model ", m.path, " has no model card"]),
	}
]

license_violations := [v |
	stage.require_license
	some m in bom_models
	not m.has_license
	v := {
		"rule_id": "MLSEC-GATE-LICENSE", "artifact": m.path, "severity": "medium", "count": 1,
		"policy": "mlsec.gate.provenance", "reason": concat("", ["model ", m.path, " has no declared licence"]),
	}
]

# -- notes on waivers ------------------------------------------------------------------------

waiver_warnings := [v |
	some w in input.waivers
	w.expired
	w.applies_to_stage
	w.matched > 0
	v := {
		"rule_id": "MLSEC-WAIVER-EXPIRED", "artifact": "", "severity": "info", "count": w.matched,
		"policy": "mlsec.gate.waivers",
		"reason": concat("", ["waiver ", w.id, " expired on ", w.expires, " and no longer applies (", format_int(w.matched, 10), " matching finding(s))"]),
	}
]

note_warnings := [v |
	some n in input.notes
	v := {
		"rule_id": "MLSEC-WAIVER-INVALID", "artifact": n.path, "severity": "info", "count": 1,
		"policy": "mlsec.gate.waivers", "reason": n.message,
	}
]

# -- team policies (package mlsec.custom.<name>) ---------------------------------------------

# A deny/warn entry may be an object or a string. Anything the gate cannot read still counts:
# a team rule that fires must never be lost (fail closed).
custom(ns, item) := {
	"rule_id": object.get(item, "rule_id", concat("", ["custom.", ns])),
	"artifact": object.get(item, "artifact", ""), "severity": object.get(item, "severity", "high"),
	"count": 1, "policy": concat("", ["mlsec.custom.", ns]),
	"reason": object.get(item, "reason", object.get(item, "msg", json.marshal(item))),
} if is_object(item)

custom(ns, item) := {
	"rule_id": concat("", ["custom.", ns]), "artifact": "", "severity": "high", "count": 1,
	"policy": concat("", ["mlsec.custom.", ns]), "reason": item,
} if is_string(item)

custom(ns, item) := {
	"rule_id": concat("", ["custom.", ns]), "artifact": "", "severity": "high", "count": 1,
	"policy": concat("", ["mlsec.custom.", ns]), "reason": json.marshal(item),
} if {
	not is_object(item)
	not is_string(item)
}

# `deny` / `warn` may be sets (deny contains msg if ...) or a boolean (deny if ...). Written out
# per name: rego-cpp 1.5.2 mishandles string literals passed as user-function arguments.
deny_items(ns) := [item | some item in data.mlsec.custom[ns].deny] if not is_boolean(data.mlsec.custom[ns].deny)

deny_items(ns) := [concat("", ["policy mlsec.custom.", ns, " deny is true"])] if data.mlsec.custom[ns].deny == true

deny_items(ns) := [] if data.mlsec.custom[ns].deny == false

warn_items(ns) := [item | some item in data.mlsec.custom[ns].warn] if not is_boolean(data.mlsec.custom[ns].warn)

warn_items(ns) := [concat("", ["policy mlsec.custom.", ns, " warn is true"])] if data.mlsec.custom[ns].warn == true

warn_items(ns) := [] if data.mlsec.custom[ns].warn == false

custom_violations := [v | some ns; data.mlsec.custom[ns]; some item in deny_items(ns); v := custom(ns, item)]

custom_warnings := [v | some ns; data.mlsec.custom[ns]; some item in warn_items(ns); v := custom(ns, item)]

# -- decision --------------------------------------------------------------------------------

violations := array.concat(
	array.concat(array.concat(severity_violations, rejected_waiver_violations), completeness_violations),
	array.concat(array.concat(array.concat(hash_violations, format_violations), array.concat(card_violations, license_violations)), custom_violations),
)

warnings := array.concat(
	array.concat(severity_warnings, completeness_warnings),
	array.concat(array.concat(waiver_warnings, note_warnings), custom_warnings),
)

waived := [{"finding": f.id, "policy": "mlsec.gate.waivers"} | some f in accepted]

outcome := "block" if {
	count(violations) > 0
} else := "warn" if {
	count(warnings) > 0
} else := "pass"

decision := {
	"decision": outcome,
	"violations": violations,
	"warnings": warnings,
	"waived": waived,
}
