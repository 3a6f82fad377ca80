package encore.jvm;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.catalyst.json.JSONOptions;

/**
 * A JSON line to a row of text fields, as Spark's from_json gives them for a schema of strings, in
 * half its time: from_json builds every value through its generic converters, this reads the named
 * fields straight off the token stream. Null means "not a JSON object" (blank, truncated, a bare
 * value), where from_json gives null or fills its corrupt-record column.
 *
 * Same reading as from_json: Spark's own JsonFactory (JSONOptions defaults: single quotes and NaN
 * allowed, comments and leading zeros not), names matched case-sensitively, the last duplicate key
 * wins, unknown fields skipped, anything after the object ignored; a string value as its text, any
 * other value as Spark's generator writes it (numbers normalised: -0 -> 0, 1E5 -> 100000.0, NaN ->
 * "NaN"; objects and arrays as compact JSON). tests/test_udfs.py compares the two line by line.
 *
 * Compiled by Spark's own Janino (jobs/udfs.py), hence raw types and no try-with-resources.
 */
public class FlatJsonRecord implements UDF1 {
    private static JsonFactory sparkFactory;

    private final String[] names;
    private transient HashMap positions;
    private transient JsonFactory factory;

    public FlatJsonRecord(String[] names) {
        this.names = names;
    }

    private static synchronized JsonFactory sparkFactory() {
        if (sparkFactory == null) {
            sparkFactory = new JSONOptions(scala.collection.immutable.Map$.MODULE$.empty(), "UTC", "")
                .buildJsonFactory();
        }
        return sparkFactory;
    }

    public Object call(Object input) throws Exception {
        if (input == null) return null;
        if (factory == null) {
            factory = sparkFactory();
            positions = new HashMap();
            for (int i = 0; i < names.length; i++) positions.put(names[i], new Integer(i));
        }
        Object[] out = new Object[names.length];
        JsonParser parser = null;
        try {
            parser = factory.createParser((String) input);
            if (parser.nextToken() != JsonToken.START_OBJECT) return null;
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                Integer at = (Integer) positions.get(parser.getCurrentName());
                JsonToken value = parser.nextToken();
                if (at == null) {
                    parser.skipChildren();
                } else {
                    out[at.intValue()] = text(parser, value);
                }
            }
            if (token != JsonToken.END_OBJECT) return null;
        } catch (IOException malformed) {
            return null;
        } catch (RuntimeException malformed) {
            return null;
        } finally {
            if (parser != null) parser.close();
        }
        return RowFactory.create(out);
    }

    private String text(JsonParser parser, JsonToken value) throws IOException {
        if (value == JsonToken.VALUE_STRING) return parser.getText();
        if (value == JsonToken.VALUE_NULL) return null;
        if (value == JsonToken.VALUE_NUMBER_INT) {
            JsonParser.NumberType type = parser.getNumberType();
            if (type == JsonParser.NumberType.INT || type == JsonParser.NumberType.LONG) {
                return Long.toString(parser.getLongValue());
            }
        }
        ByteArrayOutputStream copy = new ByteArrayOutputStream();
        JsonGenerator generator = factory.createGenerator(copy, JsonEncoding.UTF8);
        try {
            generator.copyCurrentStructure(parser);
        } finally {
            generator.close();
        }
        return new String(copy.toByteArray(), StandardCharsets.UTF_8);
    }
}
