"""Steps, one module per runbook area. Import the module you need; nothing heavy is loaded here."""
