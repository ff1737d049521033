"""Layer 6: the console scripts (spk-train, spk-eval, spk-convert, spk-parity, spk-report). They parse options,
call the layers below and print; the conversion options are one shared group (commands.options)."""
