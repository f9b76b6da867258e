// Starts a JavaScript task's bundle as CommonJS wherever it lies. Node.js reads a `.js`
// file as the nearest package.json's "type" says, and a template project's says "module":
// its webpacked bundle, started in place, would die with `require is not defined`.
// Usage: node commonjs.cjs BUNDLE ARGS... (the bundle sees `node BUNDLE ARGS...` in argv).
"use strict";
const fs = require("fs");
const Module = require("module");
const path = require("path");

const file = path.resolve(process.argv[2]);
process.argv.splice(1, 2, file);
const bundle = new Module(file, null);
bundle.filename = file;
bundle.paths = Module._nodeModulePaths(path.dirname(file));
process.mainModule = bundle;
require.main = bundle;
bundle._compile(fs.readFileSync(file, "utf8"), file);
bundle.loaded = true;
