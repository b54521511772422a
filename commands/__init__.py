"""The command layer (`edgecls.commands`): the click CLI and the commands that tie the stages together
(bench, evaluate, samples). Nothing below imports it."""
