// A task's own Express server with nothing added: `node task_server.js PORT`.
// Answers GET / with the same JSON body as bench/bare_server.py.
const express = require('express');

const port = Number(process.argv[2]);
const app = express();

app.get('/', (_req, res) => {
  res.json({ status: 200, message: 'Running' });
});

app.listen(port, '127.0.0.1');
