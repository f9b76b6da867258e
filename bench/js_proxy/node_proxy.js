// The JavaScript Koii node's forwarding of /task/<id>/... to a task's own server, set up as
// the node sets it up: `node node_proxy.js PORT TASK_ID TASK_PORT`.
const express = require('express');
const proxy = require('express-http-proxy');

const [port, taskId, taskPort] = process.argv.slice(2);
// the node's table of running tasks: task id -> the port of that task's server
const running = { [taskId]: Number(taskPort) };

// the node answers a stopped task itself, before the proxy
function requireRunning(req, res, next) {
  if (req.params[0] === 'id') {
    res.json({ taskId: req.params.taskid });
  } else if (running[req.params.taskid] !== undefined) {
    next();
  } else {
    res.status(422).send({ message: `Task ${req.params.taskid} not running` });
  }
}

const app = express();
app.use(
  '/task/:taskid/*',
  requireRunning,
  proxy((req) => `http://127.0.0.1:${running[req.params.taskid]}`, {
    // the task's server sees its own paths: /task/<id>/x arrives as /x
    proxyReqPathResolver: (req) => req.originalUrl.replace(`/task/${req.params.taskid}`, ''),
  }),
);

app.listen(Number(port), '127.0.0.1');
