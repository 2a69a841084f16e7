"""Training stages: sft, dpo, merge (TRL + PEFT)."""
