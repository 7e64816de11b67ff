"""What every job reads, writes and shows: files and URLs (`storage`), one
job at a time per directory (`locks`), progress lines (`progress`)."""
