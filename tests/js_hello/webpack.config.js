// As the K2 task template builds a task: one CommonJS file, dist/main.js, for Node.js.
import path from "path";
import { fileURLToPath } from "url";

const __dirname = path.dirname(fileURLToPath(import.meta.url));

export default {
  mode: "development",
  entry: "./src/index.js",
  target: "node",
  output: {
    filename: "main.js",
    path: path.resolve(__dirname, "dist"),
    libraryTarget: "commonjs2",
    clean: true,
  },
  // ws tries these native speed-ups and does without them when they are missing
  externals: { bufferutil: "commonjs bufferutil", "utf-8-validate": "commonjs utf-8-validate" },
  // express looks view engines up by name at run time; this task renders no views
  ignoreWarnings: [{ module: /express[\\/]lib[\\/]view\.js$/ }],
  devtool: "source-map",
  stats: "errors-warnings",
};
